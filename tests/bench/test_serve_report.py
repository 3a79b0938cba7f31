"""The serve benchmark's bookkeeping, with fake measurements: merging rounds, ratios, the table, the charts."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest

from baton.bench.report import headline_checks, serve_markdown, write_serve_outputs
from baton.bench.serve import ServeSettings, add_ratios, summarize


def measured(images, duration, latencies, forwards=10, rows=20, busy=0.5, failed=0):
    return {
        "requests": len(latencies) + failed,
        "errors": ["QueueFullError: full"] * failed,
        "images": images,
        "duration_s": duration,
        "latencies_s": latencies,
        "forwards": forwards,
        "rows": rows,
        "busy_s": busy,
        "queue_wait_s": {"text_encode": [0.001] * len(latencies), "pipeline": []},
        "run_s": {"text_encode": [0.002] * len(latencies), "pipeline": []},
    }


def test_rounds_are_pooled_not_averaged():
    row = summarize("staged-step", "closed", 4, [measured(8, 1.0, [0.1] * 8), measured(8, 3.0, [0.3] * 8)])
    assert row["images_per_s"] == pytest.approx(16 / 4.0)  # total images over total time
    assert row["images_per_s_by_round"] == [8.0, pytest.approx(2.667, abs=1e-3)]
    assert row["p50_s"] == pytest.approx(0.2) and row["p99_s"] == pytest.approx(0.3)
    assert row["denoiser_rows_per_forward"] == 2.0 and row["denoiser_busy"] == pytest.approx(0.25)
    assert row["queue_wait_s"] == {"text_encode": 0.001}  # stages never seen are left out
    assert row["concurrency"] == 4 and row["rate"] is None and row["failed"] == 0


def test_failures_are_counted_and_named():
    row = summarize("stacked", "poisson", 2.5, [measured(3, 1.0, [0.1] * 3, failed=2)])
    assert row["failed"] == 2 and row["requests"] == 5 and row["errors"] == ["QueueFullError: full"]
    assert row["rate"] == 2.5 and row["concurrency"] is None


def report_with(rows):
    add_ratios(rows)
    machine = {"device": "cpu", "cpu": "test cpu", "cpu_cores": 2, "torch": "x", "diffusers": "y",
               "created": "now", "command": "baton bench serve"}
    settings = asdict(ServeSettings(concurrency=(1, 8)))
    return {"benchmark": "serve", "machine": machine, "settings": settings, "results": rows, "timeline": {}}


def rows_for(concurrency, stacked, step, ceiling):
    return [
        summarize("stacked", "closed", concurrency, [measured(int(stacked * 10), 10.0, [1.0] * 4)]),
        summarize("staged-step", "closed", concurrency, [measured(int(step * 10), 10.0, [0.5] * 4)]),
        summarize("batched-ceiling", "closed", concurrency, [measured(int(ceiling * 10), 10.0, [0.4] * 4)]),
    ]


def test_ratios_compare_with_stacked_and_the_ceiling_at_the_same_load():
    rows = rows_for(1, 6.0, 6.0, 6.0) + rows_for(8, 5.0, 9.0, 10.0)
    add_ratios(rows)
    step_8 = next(r for r in rows if r["mode"] == "staged-step" and r["concurrency"] == 8)
    assert step_8["vs_stacked"] == pytest.approx(1.8) and step_8["vs_ceiling"] == pytest.approx(0.9)


def test_markdown_table_and_headline(tmp_path):
    report = report_with(rows_for(1, 6.0, 6.0, 6.0) + rows_for(8, 5.0, 9.0, 10.0))
    table = serve_markdown(report)
    assert "| staged-step | 8 clients | 9.00 | 1.80 | 0.90 |" in table
    assert any("reaches 0.90× the batched ceiling" in line for line in headline_checks(report))
    paths = write_serve_outputs(report, tmp_path / "serve.json", tmp_path / "serve.md", tmp_path)
    assert {p.name for p in paths} == {"serve.json", "serve.md", "serve.png"}
    assert json.loads((tmp_path / "serve.json").read_text())["results"][0]["mode"] == "stacked"
    assert (tmp_path / "serve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_settings_refuse_unknown_modes_and_bad_numbers():
    with pytest.raises(ValueError, match="`--modes`"):
        ServeSettings(modes=("stacked", "turbo"))
    with pytest.raises(ValueError, match="`--concurrency`"):
        ServeSettings(concurrency=(0,))
    with pytest.raises(ValueError, match="`--rate`"):
        ServeSettings(rates=(-1.0,))
