"""``baton bench optimizations`` end to end on tiny-sdxl: rows in their own processes, PSNR, skipped rows."""

from __future__ import annotations

import json

import numpy as np
import pytest

from baton.bench.optimizations import OptimizationSettings, add_speedups, image_distance, table_rows
from baton.cli import main


def test_the_table_runs_the_rows_that_apply_and_explains_the_rest(tmp_path, capsys):
    code = main(["bench", "optimizations", "--model", "tiny-sdxl", "--size", "64x64", "--steps", "2", "--images", "2",
                 "--iterations", "2", "--only", "diffusers fp32, classic attention (stacked),diffusers bf16 + SDPA "
                 "(stacked),bf16 + SDPA + VAE slicing,bf16 + SDPA + VAE slicing + sequential offload,preset low-memory",
                 "--out", str(tmp_path)])
    assert code == 0
    report = json.loads((tmp_path / "optimizations.json").read_text())
    rows = {row["config"]: row for row in report["results"]}
    assert list(rows) == [
        "fp32, classic attention",
        "diffusers fp32, classic attention (stacked)",
        "diffusers bf16 + SDPA (stacked)",
        "bf16 + SDPA + VAE slicing",
        "bf16 + SDPA + VAE slicing + sequential offload",
        "preset low-memory",
    ]
    reference = rows["fp32, classic attention"]
    assert reference["status"] == "ok" and reference["psnr_db"] is None and reference["vs_fp32"] == 1.0
    # the same configuration through the plain diffusers pipeline draws the same images
    assert rows["diffusers fp32, classic attention (stacked)"]["max_abs_diff"] <= 1e-5
    half = rows["bf16 + SDPA + VAE slicing"]
    assert half["status"] == "ok" and 20 < half["psnr_db"] < 80 and half["dtype"] == "bfloat16"
    assert len(half["latencies_s"]) == 2 and half["latency_s"] == half["latencies_s"][-1]
    assert half["peak_memory_gb"] > 0 and "vae slicing: one image per decode" in half["optimizations"]
    assert half["peak_rss_gb"] > 0 and half["peak_allocated_gb"] is None  # no CUDA here
    for name in ("fp32, classic attention", "diffusers bf16 + SDPA (stacked)", "bf16 + SDPA + VAE slicing"):
        row = rows[name]  # the UNet and the VAE decoder timed alike, through diffusers and through baton
        assert row["unet_s"] > 0 and row["vae_decode_s"] > 0 and row["unet_forwards"] > 0
        assert row["component_clock"] == "cpu-wall" and set(row["tf32"]) == {"matmul", "cudnn",
                                                                               "float32_matmul_precision"}
    assert report["settings"]["rows"] == list(rows) and "tf32" in report["machine"]
    skipped = rows["bf16 + SDPA + VAE slicing + sequential offload"]
    assert skipped["status"] == "skipped" and "needs a CUDA device" in skipped["reason"]
    assert rows["preset low-memory"]["psnr_db"] is None or rows["preset low-memory"]["psnr_db"] > 35
    assert (tmp_path / "optimizations.png").read_bytes()[:4] == b"\x89PNG"
    stdout = capsys.readouterr().out
    assert "| bf16 + SDPA + VAE slicing |" in stdout and "needs a CUDA device" in stdout
    assert "- lossless preset low-memory:" in stdout


def test_the_rows_follow_the_write_up_then_the_presets():
    names = [row.name for row in table_rows(OptimizationSettings(), "cuda")]
    assert names[0] == "fp32, classic attention" and names[3:7] == [
        "fp16, classic attention", "fp16 + SDPA", "fp16 + SDPA + compile", "fp16 + SDPA + compile (restart, warm cache)"
    ]
    assert names[-4:] == ["preset baseline", "preset fast", "preset low-memory", "preset max-throughput"]
    compiled = [row for row in table_rows(OptimizationSettings(images=4), "cuda")
                if row.config.optimizations.compile.enabled]
    assert compiled and all(row.config.optimizations.compile.batch_buckets == (8,) for row in compiled)


def test_image_distance_and_speedups():
    a = np.zeros((1, 2, 2, 3), np.float32)
    assert image_distance(a, a) == {"psnr_db": None, "max_abs_diff": 0.0}
    assert image_distance(a, a + 0.1) == {"psnr_db": 20.0, "max_abs_diff": pytest.approx(0.1)}
    rows = [{"config": "fp32", "kind": "reference", "status": "ok", "latency_s": 4.0},
            {"config": "diffusers fp16 + SDPA (stacked)", "kind": "baseline", "status": "ok", "latency_s": 2.0},
            {"config": "fast", "kind": "preset", "status": "ok", "latency_s": 1.0},
            {"config": "offload", "kind": "option", "status": "skipped", "reason": "no"}]
    add_speedups(rows)
    assert [(r["vs_fp32"], r["vs_stacked_sdpa"]) for r in rows] == [(1.0, 0.5), (2.0, 1.0), (4.0, 2.0), (None, None)]


def test_headline_checks_state_the_targets():
    from baton.bench.optimizations_report import headline_checks

    def row(config, kind, latency, psnr=None, ready=1.0):
        return {"config": config, "kind": kind, "status": "ok", "latency_s": latency, "psnr_db": psnr,
                "ready_s": ready}

    report = {
        "settings": {"lossless_presets": ["fast"], "lossless_psnr_db": 35.0},
        "results": [
            row("fp32, classic attention", "reference", 8.0),
            row("fp16 + SDPA", "option", 2.0, 40.0),
            row("fp16 + SDPA + compile (restart, warm cache)", "restart", 1.5, 40.0, ready=12.5),
            row("preset fast", "preset", 1.0, 30.0),
            row("preset max-throughput", "preset", 0.8, 10.0),
        ],
    }
    assert headline_checks(report) == [
        "fp16 + SDPA: 4.00× the speed of fp32, classic attention",
        "fastest preset: preset max-throughput, 2.50× the speed of fp16 + SDPA",
        "lossless preset fast: 30.0 dB against the reference (BELOW 35 dB)",
        "fp16 + SDPA + compile (restart, warm cache): ready in 12.5 s",
    ]
