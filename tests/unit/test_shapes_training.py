"""``baton train-shapes`` in miniature: a few steps train, evaluate and save a pipeline that baton then loads."""

from __future__ import annotations

import json

from baton import Engine
from baton.cli import main


def test_a_tiny_training_run_saves_a_pipeline_the_engine_serves(tmp_path):
    out = tmp_path / "shapes"
    code = main(["train-shapes", "--out", str(out), "--vae-minutes", "0.02", "--unet-minutes", "0.02", "--scenes",
                 "64", "--eval-prompts", "4", "--batch", "4"])
    assert code == 0
    record = json.loads((out / "training.json").read_text())
    assert record["vae_steps"] >= 1 and record["unet_steps"] >= 1 and record["scaling_factor"] > 0
    assert set(record["eval"]) == {"colour", "shape", "count", "size", "position"}
    assert sum(f.stat().st_size for f in out.rglob("*.safetensors")) < 20 * 2**20  # float16 weights
    with Engine(models=str(out), device="cpu") as engine:
        runner = engine.runners[str(out)]
        assert runner.family == "sd15" and runner.default_size == 64
        result = engine.generate(prompt="two small red circles at the top left on a black background", steps=2,
                                 seed=0)
    assert result.images[0].size == (64, 64)
