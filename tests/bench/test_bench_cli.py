"""``baton bench serve`` end to end on the tiny model: every mode runs, in its own process, and writes its files."""

from __future__ import annotations

import json

from baton.bench.serve import MODES
from baton.cli import main


def test_bench_serve_runs_every_mode_and_writes_json_markdown_and_charts(tmp_path, capsys):
    code = main(["bench", "serve", "--concurrency", "1,2", "--requests", "2", "--warmup", "1", "--steps", "2",
                 "--size", "64x64", "--json", str(tmp_path / "r.json"), "--plot", str(tmp_path / "charts")])
    assert code == 0
    report = json.loads((tmp_path / "r.json").read_text())
    rows = report["results"]
    assert sorted((r["mode"], r["concurrency"]) for r in rows) == sorted((m, c) for m in MODES for c in (1, 2))
    for row in rows:
        assert row["failed"] == 0 and row["images"] == (2 if row["mode"] != "batched-ceiling" else 2)
        assert row["images_per_s"] > 0 and row["p50_s"] <= row["p95_s"] <= row["p99_s"]
        assert 0 < row["denoiser_busy"] <= 1 and row["denoiser_forwards"] > 0
    assert report["machine"]["torch"] and report["settings"]["steps"] == 2
    assert set(report["timeline"]) == {"stacked", "staged-step"}
    for name in ("serve.png", "timeline.png"):
        assert (tmp_path / "charts" / name).read_bytes()[:4] == b"\x89PNG"
    stdout = capsys.readouterr().out
    assert "| staged-step | 2 clients |" in stdout


def test_bench_serve_with_poisson_arrivals(tmp_path):
    code = main(["bench", "serve", "--modes", "stacked,staged-step,batched-ceiling", "--rate", "20", "--requests",
                 "3", "--warmup", "1", "--steps", "2", "--size", "64x64", "--no-timeline", "--out", str(tmp_path)])
    assert code == 0
    report = json.loads((tmp_path / "serve.json").read_text())
    # the ceiling has no meaning for open-loop arrivals and is left out
    assert [(r["mode"], r["arrival"], r["rate"], r["concurrency"]) for r in report["results"]] == [
        ("stacked", "poisson", 20.0, None), ("staged-step", "poisson", 20.0, None)
    ]
    assert all(r["failed"] == 0 and r["images"] == 3 for r in report["results"])
    assert report["timeline"] == {} and (tmp_path / "serve.md").exists() and (tmp_path / "serve.png").exists()
