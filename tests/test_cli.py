"""The command line, run in-process (and, for what a user's terminal sees, as a process)."""

import json
import os
import socket
import subprocess
import sys

import pytest
from PIL import Image

from baton.cli import main


def one_line(text: str) -> str:
    """``text``, which must be exactly one line."""
    lines = text.splitlines()
    assert len(lines) == 1, text
    return lines[0]


def exit_code(argv: list[str]) -> int:
    """``main(argv)``'s status, whether it returns it or argparse exits with it."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


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


def test_bad_input_exits_2_with_the_field_named_in_one_line_on_stderr(tmp_path, capsys):
    assert main(["generate", "x", "--size", "100x64", "--out", str(tmp_path), "--device", "cpu"]) == 2
    captured = capsys.readouterr()
    assert "`width` must be a multiple of 8" in one_line(captured.err) and captured.out == ""
    assert main(["generate", "x", "--model", "no/such-model", "--out", str(tmp_path)]) == 2
    assert one_line(capsys.readouterr().err).startswith("baton generate: error: unknown model 'no/such-model'")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv, message", [
    (["generate"], "the following arguments are required: prompt"),
    (["generate", "x", "--size", "64X64"], "argument --size: a size must be WIDTHxHEIGHT"),
    (["generate", "x", "--size", "64x64x64"], "argument --size: a size must be WIDTHxHEIGHT"),
    (["serve", "--dtype", "float64"], "argument --dtype: invalid choice: 'float64'"),
    (["serve", "--max-size", "big"], "argument --max-size: must be SIDE or MODEL=SIDE"),
    (["serve", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    (["no-such-command"], "argument command: invalid choice: 'no-such-command'"),
])
def test_every_usage_error_is_one_line_with_exit_2(argv, message, capsys):
    assert exit_code(argv) == 2
    captured = capsys.readouterr()
    assert message in one_line(captured.err) and captured.out == ""


@pytest.mark.parametrize("command", [["generate", "a fox"], ["demo"], ["train-shapes"]])
def test_out_naming_an_existing_file_is_refused_before_any_work(command, tmp_path, capsys):
    existing = tmp_path / "image.png"
    existing.write_bytes(b"not a folder")
    assert exit_code([*command, "--out", str(existing)]) == 2
    assert f"argument --out: {str(existing)!r} is a file" in one_line(capsys.readouterr().err)
    assert existing.read_bytes() == b"not a folder"


def test_max_size_raises_a_models_limit_for_generate(tmp_path, capsys):
    assert main(["generate", "x", "--size", "192x192", "--steps", "1", "--out", str(tmp_path)]) == 2
    assert "(the limit of model 'shapes')" in one_line(capsys.readouterr().err)
    assert main(["generate", "x", "--size", "192x192", "--steps", "1", "--seed", "0", "--max-size", "shapes=192",
                 "--out", str(tmp_path)]) == 0
    assert Image.open(tmp_path / "0-0.png").size == (192, 192)


@pytest.mark.parametrize("flags, message", [
    (["--max-size", "other=128"], "`--max-size` names 'other', which is not loaded here (models: shapes)"),
    (["--max-size", "128", "--max-size", "256"], "`--max-size` for every model is given 2 times"),
    (["--max-size", "shapes=32"], "`--max-size` must pair a model name with a size >= 64"),
])
def test_max_size_mistakes_are_refused(flags, message, capsys):
    assert main(["serve", "--port", "0", *flags]) == 2
    captured = capsys.readouterr()
    assert message in one_line(captured.err) and "serving" not in captured.out


@pytest.mark.parametrize("flags, message", [
    (["--device", "cpu", "--dtype", "float16"], "`--dtype` 'float16' is not supported on the CPU"),
    (["--device", "cpu", "--offload", "model"], "`--offload` 'model' moves models off a GPU and needs a CUDA device"),
    (["--api-key-file", "{tmp}/missing"], "`--api-key-file` '{tmp}/missing' does not exist"),
    (["--api-key-file", "{tmp}/empty"], "`--api-key-file` '{tmp}/empty' holds no keys"),
    (["--drain-timeout", "0"], "`--drain-timeout` must be > 0, got 0.0"),
    (["--public-url", "images.example.com"], "`--public-url` must start with http:// or https://"),
    (["--max-queue", "0"], "`--max-queue` must be >= 1, got 0"),
])
def test_serve_refuses_what_it_cannot_run_in_one_line_before_listening(flags, message, tmp_path, capsys):
    (tmp_path / "empty").write_text("# no keys yet\n")
    flags = [flag.format(tmp=tmp_path) for flag in flags]
    assert main(["serve", "--port", "0", *flags]) == 2
    captured = capsys.readouterr()
    assert message.format(tmp=tmp_path) in one_line(captured.err)
    assert "serving" not in captured.out  # the banner comes only once the port is bound


def test_serve_refuses_a_busy_port(capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--port", str(port)]) == 2
    captured = capsys.readouterr()
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in one_line(captured.err)
    assert "serving" not in captured.out


def test_serve_help_shows_the_defaults(capsys):
    assert exit_code(["serve", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    for default in ("(default: 127.0.0.1)", "(default: 8000)", "(default: shapes)", "(default: 30.0)",
                    "(default: auto)"):
        assert default in out


def test_the_serve_defaults_are_the_server_configs():
    from baton.cli import _SERVER_FLAGS, _parser
    from baton.server import ServerConfig

    args, config = _parser().parse_args(["serve"]), ServerConfig()
    fields = [field for flags in _SERVER_FLAGS.values() for _, field, _, _ in flags]
    assert {"request_timeout_s", "stuck_after_s", "drain_timeout_s", "keep_alive_s", "max_pixels_per_request",
            "openai_steps"} <= set(fields)
    for field in fields:
        assert getattr(args, field) == getattr(config, field), field


def test_help_and_models_print_nothing_on_stderr_and_help_needs_no_torch():
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for name in ("TRANSFORMERS_VERBOSITY", "DIFFUSERS_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS", "TQDM_DISABLE"):
        env.pop(name, None)  # as a user's shell has it
    baton = [sys.executable, "-c", "import sys; from baton.cli import main; sys.exit(main())"]
    for argv in (["--help"], ["models"]):
        done = subprocess.run([*baton, *argv], capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 0 and done.stdout and done.stderr == "", (argv, done.stderr)
    check = ("import sys; from baton.cli import _parser; _parser(); "
             "print(sorted(m for m in ('torch', 'diffusers', 'transformers', 'fastapi') if m in sys.modules))")
    imported = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, env=env, timeout=60)
    assert imported.stdout.strip() == "[]", imported.stdout + imported.stderr


def test_models_lists_builtins_with_parameter_counts(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "sd15-random" in out and "1.07B" in out and "sdxl-random" in out and "3.47B" in out
    assert "tiny-sd15" in out and "tiny-sdxl" in out
    assert "7.69B" in out and "16.87B" in out and "16.86B" in out  # sd3-medium, flux-dev, flux-schnell (names cut)
    assert "tiny-sd3" in out and "tiny-flux" in out and "tiny-pixart" in out
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
    assert "`cuda_graphs` needs a CUDA device" in one_line(capsys.readouterr().err)


def test_generate_with_a_profile(tmp_path, capsys):
    code = main(["generate", "a fox", "--steps", "2", "--size", "64x64", "--out", str(tmp_path / "img"),
                 "--profile", str(tmp_path / "profile"), "--vae-slicing"])
    assert code == 0
    summary = json.loads((tmp_path / "profile" / "summary.json").read_text())
    assert summary["denoise"]["ranges"] >= 2 and summary["vae_decode"]["top"]
    assert "trace.json" in capsys.readouterr().out
