"""The load bench's per-mode summary: counts and rates as recorded in load.json."""

from __future__ import annotations

import pytest

from baton.bench.load import LoadSettings, summarize


def test_a_slow_machine_keeps_the_offered_rate_an_exact_multiple_of_the_capacity():
    # 0.09965 req/s read as 0.1 with 3 decimals, and 20x of it (1.993) no longer matched 20 x 0.1 (CI, once)
    capacity = 0.0996512
    row = summarize("staged", [(0.0, 1.5, 200), (0.5, 0.01, 429), (1.0, 0.0, "ReadTimeout")],
                    LoadSettings(duration_s=4.0), capacity, 20 * capacity)
    assert row["offered_rps"] == pytest.approx(20 * row["capacity_rps"], rel=1e-5)
    assert (row["sent"], row["accepted"], row["rejected"], row["failed"]) == (3, 1, 1, 1)
    assert row["failures"] == ["ReadTimeout"]
    assert row["accepted_rps"] == 0.25
