"""``baton bench scale`` end to end, shortened: real engine processes, a real kill, every request accounted for,
and a result ``baton plan`` reads."""

from __future__ import annotations

import json

import pytest

from baton.bench.scale import ScaleSettings, parse_layout
from baton.cli import main


@pytest.mark.timeout(300)
def test_the_scale_bench_measures_every_part_and_plan_reads_it(tmp_path, capsys):
    code = main(["bench", "scale", "--layouts", "in-process,1x1,2x1", "--requests", "4", "--rounds", "1",
                 "--concurrency", "4", "--steps", "8", "--size", "64x64", "--overhead-pairs", "5",
                 "--kill-requests", "48", "--out", str(tmp_path)])
    assert code == 0
    report = json.loads((tmp_path / "scale.json").read_text())
    rows = {row["layout"]: row for row in report["results"]}
    assert set(rows) == {"in-process", "1x1", "2x1"} and rows["2x1"]["engines"] == 2
    for row in rows.values():
        assert row["requests"] == 4 and row["failed"] == 0 and row["images"] == 4 and row["p95_s"] > 0
    kill = report["kill"]
    assert kill["served"] + sum(kill["errors"].values()) == kill["requests"] == 48
    assert kill["lost_silently"] == 0 and kill["back_after_s"] is not None
    assert set(kill["errors"]) <= {"EngineProcessLostError"}  # the only error a kill may cause
    overhead = report["overhead"]
    assert overhead["direct_p50_ms"] > 0 and overhead["routed_p50_ms"] > 0
    assert {check["check"].split(" ")[0] for check in report["checks"]} == {"router", "2", "kill"}
    assert (tmp_path / "scale.png").read_bytes()[:4] == b"\x89PNG"
    assert "| 2x1 | 2 | 1 |" in capsys.readouterr().out
    assert main(["plan", "--bench", str(tmp_path / "scale.json"), "--target-rps", "1", "--p95", "60s"]) == 0


def test_layouts_are_checked_naming_the_flag():
    assert parse_layout("2x1") == (2, 1) and parse_layout("4") == (4, None) and parse_layout("in-process") is None
    with pytest.raises(ValueError, match="`--layouts`.*'2y1'"):
        ScaleSettings(layouts=("2y1",))
