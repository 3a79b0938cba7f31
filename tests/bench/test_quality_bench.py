"""``baton bench quality`` end to end on a few prompts: rows in their own processes, accuracy, drift, skips."""

from __future__ import annotations

import json

import numpy as np

from baton.bench.quality import QualitySettings, accuracy, add_deltas, drift, quality_rows
from baton.bench.quality_report import headline_checks, quality_markdown
from baton.cli import main
from baton.shapes import render, sample_scenes
from baton.shapes.prompts import FREE_FORM_PROMPTS, FREE_FORM_STYLES


def test_the_bench_scores_each_row_against_the_reference(tmp_path):
    code = main(["bench", "quality", "--prompts", "6", "--steps", "4", "--guidance", "3", "--free-form-seeds", "1",
                 "--free-form-prompts", "6", "--device", "cpu",
                 "--only", "stacked,fp16,bf16 VAE,sampler euler,4 steps,guidance", "--out", str(tmp_path)])
    assert code == 0
    report = json.loads((tmp_path / "quality.json").read_text())
    rows = {row["config"]: row for row in report["results"]}
    assert list(rows) == ["fp32 (reference)", "diffusers fp32 (stacked)", "fp16", "bf16 VAE", "sampler euler",
                          "4 steps", "guidance 3"]
    reference = rows["fp32 (reference)"]
    assert reference["status"] == "ok" and reference["delta_points"]["colour"] == 0.0
    assert set(reference["accuracy"]) == {"colour", "shape", "count", "size", "position", "colour+shape+count"}
    # the engine draws what diffusers draws (within float rounding), so the baseline's images are the reference's
    assert rows["diffusers fp32 (stacked)"]["max_abs_diff"] <= 1e-5
    assert rows["fp16"]["status"] == "skipped" and "float16" in rows["fp16"]["reason"]
    drifted = rows["bf16 VAE"]
    assert drifted["status"] == "ok" and not drifted["identical"] and 20 < drifted["psnr_db"] < 80
    assert 0 < drifted["ssim"] < 1
    assert rows["4 steps"]["steps"] == 4 and rows["sampler euler"]["scheduler"] == "euler"
    # the free-form prompts are scored per style, and a guidance row draws other images than the reference
    assert set(reference["free_form"]) == {"overall", *FREE_FORM_STYLES}
    assert 0 <= reference["free_form"]["overall"]["all named"] <= 1
    assert rows["guidance 3"]["guidance"] == 3.0 and not rows["guidance 3"]["identical"]
    assert rows["guidance 3"]["images_per_s"] > 0 and len(FREE_FORM_PROMPTS) > 60
    markdown = (tmp_path / "quality.md").read_text()
    assert "| fp32 (reference) |" in markdown and "reference colour accuracy" in markdown
    assert "| configuration | overall | short | punctuation and case |" in markdown
    assert "reference free-form overall: every named attribute right in" in markdown
    assert (tmp_path / "quality.png").stat().st_size > 10_000


def test_rows_cover_options_presets_samplers_and_steps():
    rows = quality_rows(QualitySettings(steps=(10, 30, 50)), "cpu")
    names = [row.name for row in rows]
    assert names[:2] == ["fp32 (reference)", "diffusers fp32 (stacked)"]
    assert {"compile", "classic attention", "VAE slicing", "preset fast", "sampler dpmpp_2m", "10 steps",
            "50 steps"} <= set(names)
    assert "30 steps" not in names  # the default is the reference row
    assert {"guidance 1", "guidance 3"} <= set(names)
    gated = {row.name for row in rows if row.gated}
    assert gated == {"fp16", "bf16", "compile", "prompt cache (every prompt precomputed)"}


def test_accuracy_drift_and_the_one_point_rule():
    scenes = sample_scenes(4, seed=5, held_out=True)
    exact = np.stack([render(scene) for scene in scenes]) / 255.0
    assert accuracy(scenes, exact)["accuracy"]["colour+shape+count"] == 1.0
    blank = np.zeros_like(exact)
    assert accuracy(scenes, blank)["accuracy"]["count"] == 0.0
    assert drift(exact, exact) == {"psnr_db": None, "ssim": 1.0, "max_abs_diff": 0.0, "identical": True}
    results = [
        {"config": "fp32 (reference)", "kind": "reference", "status": "ok", "gated": False, "identical": False,
         "psnr_db": None, "ssim": None, "images_per_s": 1.0,
         "accuracy": {"colour": 0.9, "shape": 0.8, "count": 0.75, "size": 1, "position": 1,
                      "colour+shape+count": 0.6}},
        {"config": "bf16", "kind": "option", "status": "ok", "gated": True, "identical": False, "psnr_db": 40.0,
         "ssim": 0.99, "images_per_s": 1.0,
         "accuracy": {"colour": 0.88, "shape": 0.8, "count": 0.75, "size": 1, "position": 1,
                      "colour+shape+count": 0.6}},
    ]
    add_deltas(results)
    assert results[1]["delta_points"]["colour"] == -2.0
    report = {"settings": {"targets": {"colour": 0.9, "shape": 0.75, "count": 0.7}, "max_drop_points": 1.0,
                           "model": "shapes", "prompts": 4, "default_steps": 30},
              "machine": {"device": "cpu", "cpu": "x", "torch": "t", "diffusers": "d", "created": "now",
                          "command": "c"},
              "results": results}
    checks = headline_checks(report)
    assert "reference colour accuracy 90.0% (target 90%: met)" in checks
    assert "bf16: largest accuracy change 2.0 points (OVER 1)" in checks
    assert "| bf16 | 88.0% |" in quality_markdown(report)
