"""``baton plan``: the arithmetic, the choice of layout and the errors, on small synthetic ``bench serve`` results,
and once on the committed CPU result through the argparse parser."""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path

import pytest

from baton.deploy.plan import add_parser, load_result, make_plan, parse_duration

COMMITTED = Path(__file__).parents[2] / "benchmarks/results/2026-11-21-serve-tiny-sd15-128-cpu/serve.json"
H200 = {"device": "cuda:0", "gpu": "NVIDIA H200", "gpu_memory_gib": 139.8, "created": "2026-12-02T10:00:00+00:00"}


def row(mode: str = "staged-step", concurrency: int = 8, images_per_s: float = 10.0, p95_s: float = 1.0,
        failed: int = 0, requests: int = 32, images_per_request: int = 1, **extra) -> dict:
    return {"mode": mode, "concurrency": concurrency, "rate": None, "arrival": "closed", "requests": requests,
            "failed": failed, "images": (requests - failed) * images_per_request, "images_per_s": images_per_s,
            "p50_s": p95_s * 0.8, "p95_s": p95_s, "p99_s": p95_s * 1.1, **extra}


def result(*rows: dict, **settings) -> dict:
    return {"benchmark": "serve", "machine": H200,
            "settings": {"model": "sd15-random", "width": 512, "height": 512, "steps": 25, "max_rows": 16,
                         "dtype": "float16", "device": "cuda", **settings},
            "results": list(rows), "timeline": {}}


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["plan", *argv])
    return args.handler(args)


@pytest.mark.parametrize(
    ("target_rps", "headroom", "spare", "replicas"),
    [(5, 0.8, False, 1), (8, 0.8, False, 1), (8.01, 0.8, False, 2), (40, 0.8, False, 5), (40, 0.8, True, 6),
     (10, 1.0, False, 1), (10.5, 1.0, False, 2), (3, 0.25, False, 2)],
)
def test_replicas_are_the_target_over_the_derated_peak_rounded_up(target_rps, headroom, spare, replicas):
    plan = make_plan(result(row(images_per_s=10.0)), target_rps, 4.0, headroom, spare)
    assert plan.ok and plan.replicas == replicas
    assert plan.needed == replicas - spare
    assert plan.load == pytest.approx(target_rps / (plan.needed * 10.0))
    assert plan.deploy_command.endswith(f"--gpu ACCELERATOR --replicas {replicas} --max-replicas {replicas}")


def test_only_layouts_within_the_p95_target_are_chosen():
    fast_but_slow_tail = row(concurrency=16, images_per_s=20.0, p95_s=5.0)
    plan = make_plan(result(fast_but_slow_tail, row(concurrency=4, images_per_s=12.0, p95_s=2.0)), 24, 4.0)
    assert plan.choice.concurrency == 4 and plan.choice.p95_s == 2.0
    assert [layout.meets_p95 for layout in plan.candidates] == [False, True]  # best throughput first
    assert plan.replicas == math.ceil(24 / (12.0 * 0.8)) == 3
    assert "--max-queue 4 " in plan.serve_command
    assert f"--max-queued-pixel-steps {4 * 512 * 512 * 25}" in plan.serve_command


def test_rows_with_failed_requests_baselines_and_open_loop_rows_are_left_out():
    rows = [row(images_per_s=50.0, failed=1), row(mode="batched-ceiling", images_per_s=40.0),
            row(mode="stacked", images_per_s=30.0),
            {**row(images_per_s=35.0), "arrival": "poisson", "concurrency": None, "rate": 4.0},
            row(images_per_s=9.0)]
    plan = make_plan(result(*rows), 5, 4.0)
    assert [layout.images_per_s for layout in plan.candidates] == [9.0]
    assert plan.choice.images_per_s == 9.0
    skipped = " | ".join(plan.skipped)
    for reason in ("failed requests", "batched-ceiling", "stacked", "open-loop"):
        assert reason in skipped


def test_several_engines_per_device_win_when_they_serve_more():
    plan = make_plan(result(row(images_per_s=10.0), row(engines=2, images_per_s=14.0, p95_s=1.5)), 20, 4.0,
                     gpu="nvidia-h200-141gb")
    assert plan.choice.engines == 2 and plan.replicas == 2
    assert "--replicas-per-device 2" in plan.serve_command
    assert "--max-queue 4 " in plan.serve_command  # 8 in flight on the device, shared by its 2 engines
    # the pods run one engine each: 2 replicas of 2 engines are 4 pods, 2 time-sharing each GPU
    assert plan.deploy_command == ("baton deploy k8s --image IMAGE --model sd15-random --dtype float16 "
                                   "--gpu nvidia-h200-141gb --sharing time-sharing --max-shared-clients 2 "
                                   "--replicas 4 --max-replicas 4")
    assert any("baton's router" in note for note in plan.deploy_notes)


def test_one_engine_is_kept_when_more_engines_do_not_serve_more():
    plan = make_plan(result(row(images_per_s=10.0), row(engines=4, images_per_s=9.0)), 5, 4.0)
    assert plan.choice.engines == 1
    assert "--replicas-per-device" not in plan.serve_command and "--sharing" not in plan.deploy_command


def test_throughput_is_per_device_and_requests_count_their_images():
    two_devices = row(devices=2, concurrency=16, images_per_s=30.0)  # 15 per device
    plan = make_plan(result(row(images_per_s=12.0), two_devices), 10, 4.0)
    assert plan.choice.devices == 2 and plan.choice.images_per_s == 15.0 and plan.choice.in_flight == 8
    four_images = make_plan(result(row(images_per_s=12.0, images_per_request=4)), 10, 4.0)
    assert four_images.shape.images == 4 and four_images.choice.requests_per_s == 3.0
    assert four_images.replicas == math.ceil(10 / (3.0 * 0.8))
    assert f"--max-queued-pixel-steps {8 * 4 * 512 * 512 * 25}" in four_images.serve_command


def test_settings_without_a_serve_flag_are_named_and_a_preset_is_passed_on():
    request_batching = make_plan(result(row(mode="staged"), max_rows=24), 5, 4.0)
    notes = " ".join(request_batching.unflagged)
    assert "request-level batching" in notes and "max_rows=24" in notes
    preset = make_plan(result(row(), max_rows=32, optimizations={"preset": "max-throughput"}), 5, 4.0)
    assert "--preset max-throughput" in preset.serve_command and "--dtype float16" in preset.serve_command
    assert preset.unflagged == ()  # the preset's 32 rows are what the bench ran


def test_no_layout_within_the_target_exits_1_with_the_best_p95(tmp_path, capsys):
    path = tmp_path / "serve.json"
    path.write_text(json.dumps(result(row(p95_s=3.0, images_per_s=20.0), row(concurrency=1, p95_s=2.5))))
    plan = make_plan(load_result(path), 5, 2.0)
    assert not plan.ok and plan.replicas == 0 and plan.best_p95.p95_s == 2.5
    assert run_cli(["--bench", str(path), "--target-rps", "5", "--p95", "2s"]) == 1
    captured = capsys.readouterr()
    assert "no measured layout meets `--p95` 2s" in captured.err and "2.5 s" in captured.err
    assert run_cli(["--bench", str(path), "--target-rps", "5", "--p95", "2s", "--json"]) == 1
    answer = json.loads(capsys.readouterr().out)
    assert answer["ok"] is False and answer["choice"] is None and answer["best_p95"]["p95_s"] == 2.5


@pytest.mark.parametrize(("text", "seconds"),
                         [("4s", 4.0), ("4.5", 4.5), ("800ms", 0.8), (" 2.5 S ", 2.5), (".5s", 0.5)])
def test_p95_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "4 minutes", "-1s", "0", "abc", "4s5"])
def test_a_bad_p95_is_one_error_naming_the_flag_and_value(text, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(["--bench", "x.json", "--target-rps", "5", f"--p95={text}"])  # = lets "-1s" through as a value
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --p95: must be a positive duration like 4s, 4.5 or 800ms, got {text!r}" in err


@pytest.mark.parametrize(
    ("content", "match"),
    [(None, "does not exist"), ("{not json", "is not JSON"), ('{"benchmark": "load", "results": []}',
                                                              "not a `baton bench serve` or `scale` result.*'load'"),
     ('[1, 2]', "not a `baton bench serve` or `scale` result"),
     ('{"benchmark": "serve", "settings": {"model": "m"}, "results": []}', "no settings width, height, steps"),
     ('{"benchmark": "serve", "settings": {"model": "m", "width": null, "height": 8, "steps": 2}, "results": []}',
      "settings width None")],
)
def test_bad_bench_files_name_the_flag_and_the_path(tmp_path, content, match):
    path = tmp_path / "serve.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValueError, match=f"`--bench` '{re.escape(str(path))}'.*{match}"):
        run_cli(["--bench", str(path), "--target-rps", "5", "--p95", "4s"])


@pytest.mark.parametrize(
    ("kwargs", "flag"),
    [({"target_rps": 0}, "--target-rps"), ({"target_rps": math.inf}, "--target-rps"), ({"headroom": 0}, "--headroom"),
     ({"headroom": 1.2}, "--headroom"), ({"p95_s": -1}, "--p95")],
)
def test_bad_targets_name_their_flag(kwargs, flag):
    with pytest.raises(ValueError, match=f"`{flag}`"):
        make_plan(result(row()), **{"target_rps": 5, "p95_s": 4.0, **kwargs})


def test_a_result_without_usable_rows_says_why():
    with pytest.raises(ValueError, match="no usable row: 2 rows: failed requests; 1 row: mode stacked"):
        make_plan(result(row(failed=2), row(failed=32), row(mode="stacked")), 5, 4.0)


def test_the_committed_cpu_result_through_the_parser(capsys):
    assert run_cli(["--bench", str(COMMITTED), "--target-rps", "5", "--p95", "4s", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    # every staged row is within 4 s there, and step batching at 8 clients serves the most (14.2 images/s)
    assert answer["ok"] and answer["choice"]["mode"] == "staged-step" and answer["choice"]["concurrency"] == 8
    assert answer["replicas"] == 1 and answer["shape"]["width"] == 128 and answer["shape"]["images"] == 1
    assert answer["serve_command"] == ("baton serve --host 0.0.0.0 --model tiny-sd15 --max-queue 8 "
                                       f"--max-queued-pixel-steps {8 * 128 * 128 * 20}")
    assert run_cli(["--bench", str(COMMITTED), "--target-rps", "20", "--p95", "500ms", "--spare"]) == 0
    out = capsys.readouterr().out
    # at 500 ms the 8-client rows' p95 (0.62 s) is out: 4 clients, 11.5 req/s, so ceil(20 / 9.24) = 3, + 1 spare
    assert "Plan: 4 replicas (3 at 80% headroom + 1 spare)" in out
    assert "--max-queue 4 " in out and "--gpu none --replicas 4 --max-replicas 4" in out
    assert "Measured on cpu (AMD EPYC, 2 cores)" in out and "Closed-loop clients" in out


@pytest.mark.parametrize("engines", [1, 2])
def test_the_deploy_line_is_one_baton_deploy_k8s_accepts(tmp_path, engines, capsys):
    from baton.deploy import k8s

    plan = make_plan(result(row(engines=engines, images_per_s=3.0), optimizations={"preset": "fast"}), 20, 4.0,
                     spare=True, gpu="nvidia-h100-80gb")
    assert "--preset fast" in plan.deploy_command
    assert f"--target-pending {8 / engines * 0.8:.1f}" in plan.deploy_notes[-1]
    parser = argparse.ArgumentParser()
    k8s.add_parser(parser.add_subparsers(dest="command"))
    argv = plan.deploy_command.replace("IMAGE", "example.com/baton:1").split()[1:]
    args = parser.parse_args([*argv, "--out", str(tmp_path), "--ray-version", "2.40.0"])
    assert args.handler(args) == 0
    deployment = (tmp_path / "deployment.yaml").read_text()
    assert f"replicas: {plan.replicas * engines}" in deployment and "nvidia-h100-80gb" in deployment
    assert ("time-sharing" in deployment) == (engines > 1)


def test_a_gpu_gke_does_not_know_is_refused():
    with pytest.raises(ValueError, match="`--gpu` must be a GKE accelerator .* got 'h100'"):
        make_plan(result(row()), 5, 4.0, gpu="h100")
