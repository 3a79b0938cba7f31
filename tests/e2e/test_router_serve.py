"""``baton serve --devices cpu,cpu``: the HTTP API over two engine processes behind the router."""

from __future__ import annotations

import functools
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from baton.cluster import Router
from baton.config import EngineConfig
from tests.e2e.conftest import running_server, serve_process
from tests.e2e.test_streaming_and_metrics import metric, sse_events

CONFIG = EngineConfig(models=("tiny-sd15",), device="cpu")
LONG = {"prompt": "abandoned", "steps": 200, "width": 256, "height": 256}  # seconds of work on one thread


@pytest.fixture(scope="module")
def routed():
    handle: dict = {}
    factory = functools.partial(Router, devices=["cpu", "cpu"])
    with running_server(CONFIG, engine_factory=factory, handle=handle) as url:
        yield url, handle["server"].state


def wait_idle(url: str) -> dict:
    deadline = time.monotonic() + 15
    while (stats := httpx.get(f"{url}/v1/stats").json())["pending"] != 0:
        assert time.monotonic() < deadline, "work was left running in an engine process"
        time.sleep(0.05)
    return stats


def test_a_stream_through_an_engine_process_carries_progress_previews_and_the_result(routed):
    url, _ = routed
    body = {"prompt": "a fox", "steps": 6, "width": 64, "height": 64, "seed": 3, "scheduler": "euler",
            "stream": True, "preview_every": 3}
    events = sse_events(httpx.post(f"{url}/v1/generate", json=body, timeout=60))
    assert [kind for kind, _ in events] == ["progress"] * 3 + ["preview"] + ["progress"] * 3 + ["result"]
    plain = httpx.post(f"{url}/v1/generate", json={**body, "stream": False}, timeout=60).json()
    assert events[-1][1]["images"] == plain["images"] and plain["width"] == 64


def test_bad_input_is_refused_by_the_router_before_any_engine_sees_it(routed):
    url, _ = routed
    response = httpx.post(f"{url}/v1/generate", json={"prompt": "x", "width": 500, "stream": True})
    assert response.status_code == 400 and response.json()["error"]["param"] == "width"


def test_a_client_that_leaves_frees_the_engine_process(routed):
    url, _ = routed
    before = metric(url, "baton_requests_cancelled_total", reason="client_disconnected")
    with httpx.stream("POST", f"{url}/v1/generate", json={**LONG, "stream": True}, timeout=30) as response:
        assert next(response.iter_lines()).startswith("event: progress")
    stats = wait_idle(url)  # dropped at a step in the engine process, not run to the end
    assert all(engine["queued_pixel_steps"] == 0 for engine in stats["engines"])
    assert metric(url, "baton_requests_cancelled_total", reason="client_disconnected") == before + 1


def test_a_timeout_cancels_the_work_in_the_engine_process(routed):
    url, _ = routed
    response = httpx.post(f"{url}/v1/generate", json={**LONG, "timeout_s": 0.5}, timeout=30)
    assert response.status_code == 504
    wait_idle(url)


def test_stats_and_metrics_show_each_engine(routed):
    url, _ = routed
    httpx.post(f"{url}/v1/generate", json={"prompt": "counted", "steps": 2, "width": 64, "height": 64}, timeout=60)
    stats = httpx.get(f"{url}/v1/stats").json()
    assert [engine["name"] for engine in stats["engines"]] == ["0:cpu", "1:cpu"]
    assert {engine["state"] for engine in stats["engines"]} == {"ready"}
    for name in ("0:cpu", "1:cpu"):
        assert metric(url, "baton_engine_up", engine=name, state="ready") == 1.0
        assert metric(url, "baton_device_memory_bytes", device="cpu", engine=name) > 1e7
    models = httpx.get(f"{url}/v1/models").json()
    assert models["data"][0]["id"] == "tiny-sd15" and len(models["engine"]["router"]["engines"]) == 2


def test_readiness_stays_green_while_one_engine_restarts(routed):
    url, state = routed
    router: Router = state.engine
    victim = router.engines[1]
    victim.kill()
    deadline = time.monotonic() + 30
    while router.engines[1] is victim or not router.engines[1].ready:
        assert httpx.get(f"{url}/readyz").status_code == 200  # the other engine serves meanwhile
        response = httpx.post(f"{url}/v1/generate", json={"prompt": "x", "steps": 2, "width": 64, "height": 64},
                              timeout=30)
        assert response.status_code == 200
        assert time.monotonic() < deadline, "the killed engine was not back within 30 s"
        time.sleep(0.2)
    assert metric(url, "baton_engine_restarts_total", engine="1:cpu") == 1.0


def test_baton_serve_devices_drains_on_sigterm_and_leaves_no_engine_process_behind():
    with serve_process("--model", "tiny-sd15", "--devices", "cpu,cpu") as served:
        stats = httpx.get(f"{served.url}/v1/stats").json()
        pids = [engine["pid"] for engine in stats["engines"]]
        assert len(pids) == 2
        in_flight: dict = {}

        def slow_request() -> None:
            in_flight["response"] = httpx.post(f"{served.url}/v1/generate", timeout=120,
                                               json={"prompt": "slow", "steps": 60, "width": 128, "height": 128})

        sender = threading.Thread(target=slow_request)
        sender.start()
        while httpx.get(f"{served.url}/v1/stats").json()["pending"] == 0:  # admitted
            time.sleep(0.01)
        served.process.send_signal(signal.SIGTERM)
        sender.join(120)
        assert in_flight["response"].status_code == 200 and in_flight["response"].json()["width"] == 128
        assert served.process.wait(60) == -signal.SIGTERM
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() for pid in pids):  # the engine processes ended with the server
        assert time.monotonic() < deadline, "an engine process outlived its server"
        time.sleep(0.1)


@pytest.mark.parametrize(("flags", "message"), [
    (["--devices", "0,gpu"], "`--devices` takes a comma-separated list"),
    (["--devices", "cpu", "--device", "cpu"], "`--devices` replaces `--device`"),
    (["--replicas-per-device", "0", "--devices", "cpu"], "`--replicas-per-device` must be >= 1"),
    (["--threads-per-engine", "2"], "`--threads-per-engine` applies to engine processes"),
    (["--replicas", "2"], "`--replicas` applies only with `--backend ray`"),
    (["--backend", "ray", "--devices", "cpu,cpu"], "`--devices` and `--replicas-per-device` are for the local"),
])
def test_scale_out_flags_that_cannot_apply_are_one_line_errors(flags, message, capsys):
    from baton.cli import main

    assert main(["serve", "--model", "tiny-sd15", "--port", "0", *flags]) == 2
    error = capsys.readouterr().err
    assert message in error and len(error.strip().splitlines()) == 1
