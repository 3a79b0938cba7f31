"""``baton bench load`` end to end, shortened: real servers on loopback, every request accounted for."""

from __future__ import annotations

import json

import pytest

from baton.cli import main


def test_the_load_bench_counts_every_request(tmp_path, capsys):
    # a far higher load than the capacity, so the queue overflows however slow this machine is at the moment
    code = main(["bench", "load", "--duration", "4", "--overload", "20", "--max-queue", "1", "--steps", "4",
                 "--size", "64x64", "--capacity-clients", "2", "--out", str(tmp_path)])
    assert code == 0
    report = json.loads((tmp_path / "load.json").read_text())
    rows = {row["mode"]: row for row in report["results"]}
    assert set(rows) == {"staged", "stacked"}
    staged, stacked = rows["staged"], rows["stacked"]
    assert staged["offered_rps"] == stacked["offered_rps"] == pytest.approx(20 * staged["capacity_rps"], rel=1e-3)
    for row in rows.values():
        assert row["sent"] == row["accepted"] + row["rejected"] + row["failed"] == len(row["timeline"])
        assert row["failed"] == 0 and row["accepted"] > 0
        assert set(status for _, _, status in row["timeline"]) <= {200, 429}
    assert staged["rejected"] > 0 and stacked["rejected"] > 0  # 20x the capacity overflows a queue of 1
    assert (tmp_path / "load.png").read_bytes()[:4] == b"\x89PNG"
    assert "| staged |" in capsys.readouterr().out
