"""``baton bench load`` end to end, shortened: real servers on loopback, every request accounted for."""

from __future__ import annotations

import json

from baton.cli import main


def test_the_load_bench_counts_every_request(tmp_path, capsys):
    code = main(["bench", "load", "--duration", "3", "--overload", "3", "--max-queue", "2", "--steps", "4",
                 "--size", "64x64", "--capacity-clients", "2", "--out", str(tmp_path)])
    assert code == 0
    report = json.loads((tmp_path / "load.json").read_text())
    rows = {row["mode"]: row for row in report["results"]}
    assert set(rows) == {"staged", "stacked"}
    staged, stacked = rows["staged"], rows["stacked"]
    assert staged["offered_rps"] == stacked["offered_rps"] == round(3 * staged["capacity_rps"], 3)
    for row in rows.values():
        assert row["sent"] == row["accepted"] + row["rejected"] + row["failed"] == len(row["timeline"])
        assert row["failed"] == 0 and row["accepted"] > 0
        assert set(status for _, _, status in row["timeline"]) <= {200, 429}
    assert staged["rejected"] + stacked["rejected"] > 0  # three times the capacity overflows a queue of 2
    assert (tmp_path / "load.png").read_bytes()[:4] == b"\x89PNG"
    assert "| staged |" in capsys.readouterr().out
