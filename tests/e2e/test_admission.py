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


def slow_engine(delay_s: float, gate: threading.Event):
    """An engine whose denoiser sleeps ``delay_s`` per forward while ``gate`` is set: a step that hangs."""

    def build(config: EngineConfig) -> Engine:
        engine = Engine(config)
        runner = engine.runners[engine.default_model]
        fast = runner.denoiser

        def slow(*args, **kwargs):
            if gate.is_set():
                time.sleep(delay_s)
            return fast(*args, **kwargs)

        runner.denoiser = slow
        return engine

    return build


def test_queued_work_is_bounded_in_pixel_steps_not_only_in_requests():
    gate = threading.Event()
    # room for one 64x64 image at 2 steps: a second request waits behind the first, and is refused
    config = EngineConfig(models=("tiny-sd15",), device="cpu", max_queued_pixel_steps=64 * 64 * 2)
    with running_server(config, engine_factory=slow_engine(0.5, gate)) as url:
        gate.set()
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(httpx.post, f"{url}/v1/generate", json={"prompt": "x", **FAST}, timeout=60)
            while httpx.get(f"{url}/readyz").json().get("pending", 0) == 0:
                time.sleep(0.01)
            refused = httpx.post(f"{url}/v1/generate", json={"prompt": "y", **FAST})
            assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
            assert "pixel-steps" in refused.json()["error"]["message"]
            assert metric(url, "baton_queued_pixel_steps") == 64 * 64 * 2
            gate.clear()
            assert first.result().status_code == 200
        assert httpx.post(f"{url}/v1/generate", json={"prompt": "y", **FAST}, timeout=60).status_code == 200


def test_the_watchdog_turns_readiness_red_while_a_step_hangs_and_green_after():
    gate = threading.Event()
    config = ServerConfig(stuck_after_s=0.5)
    with running_server(config=config, engine_factory=slow_engine(3.0, gate)) as url:
        assert httpx.get(f"{url}/readyz").status_code == 200
        gate.set()
        with ThreadPoolExecutor(1) as pool:
            slow = pool.submit(httpx.post, f"{url}/v1/generate", json={"prompt": "x", **FAST}, timeout=60)
            deadline = time.monotonic() + 10
            while (ready := httpx.get(f"{url}/readyz")).status_code == 200:
                assert time.monotonic() < deadline, "readiness never turned red"
                time.sleep(0.05)
            assert ready.status_code == 503 and ready.json()["status"] == "stuck"
            assert "no stage has finished any work" in ready.json()["reason"]
            health = httpx.get(f"{url}/healthz")
            assert health.status_code == 200 and health.json()["status"] == "stuck"  # alive: don't restart
            assert metric(url, "baton_stalled_seconds") >= 0.5
            gate.clear()
            assert slow.result().status_code == 200
        assert httpx.get(f"{url}/readyz").status_code == 200
        assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
        assert metric(url, "baton_stalled_seconds") == 0
