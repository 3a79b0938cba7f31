"""``baton train-shapes`` in miniature: a few steps train, evaluate and save a pipeline that baton then loads."""

from __future__ import annotations

import json

from baton import Engine
from baton.cli import main
from baton.config import OptimizationConfig


def test_a_tiny_training_run_saves_a_pipeline_the_engine_serves(tmp_path):
    out = tmp_path / "shapes"
    code = main(["train-shapes", "--out", str(out), "--vae-minutes", "0.02", "--unet-minutes", "0.02",
                 "--tiny-vae-minutes", "0.01", "--scenes", "64", "--eval-prompts", "4", "--batch", "4"])
    assert code == 0
    record = json.loads((out / "training.json").read_text())
    assert record["vae_steps"] >= 1 and record["unet_steps"] >= 1 and record["scaling_factor"] > 0
    assert set(record["eval"]) == {"colour", "shape", "count", "size", "position"}
    assert record["tiny_vae"]["steps"] >= 1 and set(record["tiny_vae"]["reconstruction"]) == set(record["eval"])
    assert (out / "vae_tiny" / "config.json").is_file()
    assert sum(f.stat().st_size for f in out.rglob("*.safetensors")) < 20 * 2**20  # float16 weights
    with Engine(models=str(out), device="cpu") as engine:
        runner = engine.runners[str(out)]
        assert runner.family == "sd15" and runner.default_size == 64
        result = engine.generate(prompt="two small red circles at the top left on a black background", steps=2,
                                 seed=0)
    assert result.images[0].size == (64, 64)
    with Engine(models=str(out), device="cpu", optimizations=OptimizationConfig(vae="tiny")) as engine:
        described = engine.describe()["models"][0]["optimizations"]
        result = engine.generate(prompt="a red circle", steps=2, seed=0)
    assert f"vae replaced by {out / 'vae_tiny'} (AutoencoderTiny, float32)" in described
    assert result.images[0].size == (64, 64)


def test_tiny_vae_only_trains_the_tiny_autoencoder_of_a_saved_model(tmp_path, capsys):
    import shutil

    from baton.models.registry import EMBEDDED_MODELS

    assert main(["train-shapes", "--out", str(tmp_path / "empty"), "--tiny-vae-only"]) == 2
    assert "holds no saved model" in capsys.readouterr().err
    assert main(["train-shapes", "--out", str(tmp_path / "empty"), "--tiny-vae-minutes", "0"]) == 2
    assert "`tiny_vae_minutes` (--tiny-vae-minutes) must be > 0 minutes, got 0.0" in capsys.readouterr().err
    assert not (tmp_path / "empty").exists()  # refused before any training
    folder = tmp_path / "shapes"
    shutil.copytree(EMBEDDED_MODELS["shapes"], folder, ignore=shutil.ignore_patterns("vae_tiny"))
    before = json.loads((folder / "training.json").read_text())
    del before["tiny_vae"]
    (folder / "training.json").write_text(json.dumps(before))
    assert main(["train-shapes", "--out", str(folder), "--tiny-vae-only", "--tiny-vae-minutes", "0.01"]) == 0
    record = json.loads((folder / "training.json").read_text())
    assert record.pop("tiny_vae")["steps"] >= 1 and record == before  # the rest of the record stays
    assert (folder / "vae_tiny" / "diffusion_pytorch_model.safetensors").is_file()
