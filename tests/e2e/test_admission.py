"""Cost-aware admission (sizes that fit each model, work bounded in pixel-steps) and the watchdog, over HTTP."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from baton import Engine
from baton.config import EngineConfig, RequestLimits
from baton.server import ServerConfig
from tests.e2e.conftest import running_server
from tests.e2e.test_streaming_and_metrics import metric

FAST = {"steps": 2, "width": 64, "height": 64}


def test_each_model_has_its_own_size_limit():
    limits = RequestLimits(model_max_size=(("tiny-sd15", 128),))
    config = EngineConfig(models=("tiny-sd15", "tiny-sdxl"), device="cpu", limits=limits)
    with running_server(config) as url:
        models = {model["id"]: model for model in httpx.get(f"{url}/v1/models").json()["data"]}
        assert models["tiny-sd15"]["max_size"] == 128  # configured
        assert models["tiny-sdxl"]["max_size"] == 2 * models["tiny-sdxl"]["default_size"]  # twice native
        refused = httpx.post(f"{url}/v1/generate", json={"prompt": "x", "steps": 2, "width": 136, "height": 64})
        assert refused.status_code == 400
        error = refused.json()["error"]
        assert error["param"] == "width"
        assert error["message"] == ("`width` must be a multiple of 8 between 64 and 128 (the limit of model "
                                    "'tiny-sd15'), got 136")
        served = httpx.post(f"{url}/v1/generate", timeout=60,
                            json={"prompt": "x", "model": "tiny-sdxl", "steps": 2, "width": 136, "height": 64})
        assert served.status_code == 200, served.text


def hanging_engine(hang: threading.Event, release: threading.Event):
    """An engine whose denoiser forwards block while ``hang`` is set, until ``release`` is: a step that hangs."""

    def build(config: EngineConfig) -> Engine:
        engine = Engine(config)
        runner = engine.runners[engine.default_model]
        fast = runner.denoiser

        def hanging(*args, **kwargs):
            if hang.is_set():
                release.wait(60)
            return fast(*args, **kwargs)

        runner.denoiser = hanging
        return engine

    return build


def wait_for(condition, what: str, timeout_s: float = 15.0):
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        assert time.monotonic() < deadline, what
        time.sleep(0.05)
    return value


def test_queued_work_is_bounded_in_pixel_steps_not_only_in_requests():
    hang, release = threading.Event(), threading.Event()
    # room for one 64x64 image at 2 steps: a second request waits behind the first, and is refused
    config = EngineConfig(models=("tiny-sd15",), device="cpu", max_queued_pixel_steps=64 * 64 * 2)
    with running_server(config, engine_factory=hanging_engine(hang, release)) as url:
        hang.set()
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(httpx.post, f"{url}/v1/generate", json={"prompt": "x", **FAST}, timeout=60)
            wait_for(lambda: httpx.get(f"{url}/readyz").json().get("pending", 0), "the first was never admitted")
            refused = httpx.post(f"{url}/v1/generate", json={"prompt": "y", **FAST})
            assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
            assert "pixel-steps" in refused.json()["error"]["message"]
            assert metric(url, "baton_queued_pixel_steps") == 64 * 64 * 2
            release.set()
            assert first.result().status_code == 200
        assert httpx.post(f"{url}/v1/generate", json={"prompt": "y", **FAST}, timeout=60).status_code == 200


def test_the_watchdog_turns_readiness_red_while_a_step_hangs_and_green_after():
    hang, release = threading.Event(), threading.Event()
    with running_server(config=ServerConfig(stuck_after_s=0.5), engine_factory=hanging_engine(hang, release)) as url:
        assert httpx.get(f"{url}/readyz").status_code == 200
        hang.set()
        with ThreadPoolExecutor(1) as pool:
            slow = pool.submit(httpx.post, f"{url}/v1/generate", json={"prompt": "x", **FAST}, timeout=60)
            ready = wait_for(lambda: (r := httpx.get(f"{url}/readyz")).status_code == 503 and r,
                             "readiness never turned red")
            assert ready.json()["status"] == "stuck"
            assert "has finished no work" in ready.json()["reason"]
            health = httpx.get(f"{url}/healthz")
            assert health.status_code == 200 and health.json()["status"] == "stuck"  # alive: don't restart
            assert metric(url, "baton_stalled_seconds") >= 0.5
            release.set()
            assert slow.result().status_code == 200
        assert httpx.get(f"{url}/readyz").status_code == 200
        assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
        assert metric(url, "baton_stalled_seconds") == 0


def test_a_timed_out_request_whose_step_runs_on_keeps_readiness_red_and_its_work_counted():
    # the first week's incident: a huge request timed out, its step ran on, and the probes stayed green
    hang, release = threading.Event(), threading.Event()
    config = EngineConfig(models=("tiny-sd15",), device="cpu", max_queued_pixel_steps=64 * 64 * 2)
    with running_server(config, ServerConfig(stuck_after_s=0.5), engine_factory=hanging_engine(hang, release)) as url:
        hang.set()
        timed_out = httpx.post(f"{url}/v1/generate", json={"prompt": "x", "timeout_s": 0.3, **FAST}, timeout=30)
        assert timed_out.status_code == 504
        assert httpx.get(f"{url}/readyz").json().get("pending", 0) == 0  # nobody waits for it any more ...
        wait_for(lambda: httpx.get(f"{url}/readyz").status_code == 503, "readiness stayed green")  # ... but it runs
        refused = httpx.post(f"{url}/v1/generate", json={"prompt": "y", **FAST})
        assert refused.status_code == 429  # the abandoned step's work still counts
        release.set()
        wait_for(lambda: httpx.get(f"{url}/readyz").status_code == 200, "readiness never turned green again")
        assert httpx.post(f"{url}/v1/generate", json={"prompt": "y", **FAST}, timeout=60).status_code == 200
