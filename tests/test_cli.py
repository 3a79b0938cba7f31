"""The command line, run in-process."""

import json

from PIL import Image

from baton.cli import main


def test_generate_writes_the_images_and_prints_the_stage_table(tmp_path, capsys):
    code = main(["generate", "a red fox in the snow", "--model", "tiny-sd15", "-n", "2", "--steps", "3", "--seed",
                 "0", "--size", "96x64", "--out", str(tmp_path), "--device", "cpu"])
    assert code == 0
    written = sorted(tmp_path.glob("*.png"))
    assert [p.name for p in written] == ["0-0.png", "0-1.png"]
    assert all(Image.open(p).size == (96, 64) for p in written)
    out = capsys.readouterr().out
    for stage in ("text_encode", "denoise", "vae_decode", "image_encode", "end to end"):
        assert stage in out


def test_generate_in_stacked_mode_and_jpeg(tmp_path):
    assert main(["generate", "a cat", "--model", "tiny-sdxl", "--steps", "2", "--seed", "4", "--size", "64x64",
                 "--format", "jpeg", "--mode", "stacked", "--out", str(tmp_path), "--device", "cpu"]) == 0
    assert Image.open(tmp_path / "4-0.jpg").format == "JPEG"


def test_bad_input_exits_2_with_the_field_named(tmp_path, capsys):
    assert main(["generate", "x", "--size", "100x64", "--out", str(tmp_path), "--device", "cpu"]) == 2
    assert "`width` must be a multiple of 8" in capsys.readouterr().out
    assert main(["generate", "x", "--model", "no/such-model", "--out", str(tmp_path)]) == 2
    assert "unknown model" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []


def test_models_lists_builtins_with_parameter_counts(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "sd15-random" in out and "1.07B" in out and "sdxl-random" in out and "3.47B" in out
    assert "tiny-sd15" in out and "tiny-sdxl" in out
    assert "shapes" in out and "5.69M" in out  # its pipeline; its tiny autoencoder (another decoder) is apart


def test_info_reports_versions_and_devices(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "torch" in out and "diffusers" in out and "cuda available" in out


def test_info_with_a_model_reports_the_applied_optimizations(capsys):
    assert main(["info", "--model", "tiny-sd15", "--preset", "low-memory", "--attention", "classic"]) == 0
    out = capsys.readouterr().out
    assert "preset low-memory" in out and "vae slicing" in out and "attention: classic" in out


def test_an_option_the_device_cannot_run_exits_2_naming_it(capsys):
    assert main(["generate", "a fox", "--device", "cpu", "--cuda-graphs"]) == 2
    assert "`cuda_graphs` needs a CUDA device" in capsys.readouterr().out


def test_generate_with_a_profile(tmp_path, capsys):
    code = main(["generate", "a fox", "--steps", "2", "--size", "64x64", "--out", str(tmp_path / "img"),
                 "--profile", str(tmp_path / "profile"), "--vae-slicing"])
    assert code == 0
    summary = json.loads((tmp_path / "profile" / "summary.json").read_text())
    assert summary["denoise"]["ranges"] >= 2 and summary["vae_decode"]["top"]
    assert "trace.json" in capsys.readouterr().out
