"""The HTTP server over real HTTP: the OpenAI client round trip, the native API, errors, auth, overload, timeouts."""

from __future__ import annotations

import base64
import io
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from openai import OpenAI
from PIL import Image

from baton import Engine
from baton.config import EngineConfig
from baton.server import ServerConfig
from tests.e2e.conftest import running_server

FAST = {"steps": 2, "width": 64, "height": 64}


@pytest.fixture(scope="module")
def server():
    config = ServerConfig(max_prompt_chars=50, max_pixels_per_request=4 * 128 * 128, max_body_bytes=4096)
    with running_server(config=config) as url:
        yield url


def png(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    return image


def test_probes_and_models(server):
    assert httpx.get(f"{server}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{server}/readyz").json()["status"] == "ready"
    models = httpx.get(f"{server}/v1/models").json()
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == ["tiny-sd15"]
    assert models["data"][0]["family"] == "sd15" and "optimizations" in models["data"][0]


def test_the_openai_client_round_trip_b64_and_url(server):
    client = OpenAI(base_url=f"{server}/v1", api_key="unused")
    response = client.images.generate(model="tiny-sd15", prompt="a red fox", n=2, size="64x64",
                                      response_format="b64_json")
    assert len(response.data) == 2 and response.size == "64x64"
    assert {png(base64.b64decode(d.b64_json)).size for d in response.data} == {(64, 64)}
    response = client.images.generate(prompt="a red fox", size="64x64", response_format="url")
    assert response.data[0].url.startswith("/v1/images/")  # relative: no --public-url, and never the Host header
    image = httpx.get(server + response.data[0].url)
    assert image.headers["content-type"] == "image/png" and png(image.content).size == (64, 64)
    assert len(response.data[0].url.rsplit("/", 1)[1]) >= 32  # an id that cannot be guessed


def test_native_generate_returns_the_seed_timings_and_same_images_for_the_same_seed(server):
    body = {"prompt": "a blue whale", "seed": 7, "num_images": 1, "scheduler": "euler", **FAST}
    first = httpx.post(f"{server}/v1/generate", json=body, timeout=60).json()
    second = httpx.post(f"{server}/v1/generate", json=body, timeout=60).json()
    assert first["seed"] == 7 and first["width"] == 64 and first["model"] == "tiny-sd15"
    assert set(first["timings"]) == {"text_encode", "denoise", "vae_decode", "image_encode"}
    assert first["images"][0]["b64_json"] == second["images"][0]["b64_json"]
    jpeg = httpx.post(f"{server}/v1/generate", json={**body, "output_format": "jpeg", "response_format": "url"},
                      timeout=60).json()
    assert jpeg["images"][0]["url"].endswith(".jpg")
    assert httpx.get(server + jpeg["images"][0]["url"]).headers["content-type"] == "image/jpeg"


@pytest.mark.parametrize(
    ("path", "body", "status", "param"),
    [
        ("/v1/generate", {"prompt": "x", "width": 500, **{k: v for k, v in FAST.items() if k != "width"}}, 400,
         "width"),
        ("/v1/generate", {"prompt": "x", "steps": 0}, 400, "steps"),
        ("/v1/generate", {"prompt": "x", "scheduler": "magic"}, 400, "scheduler"),
        ("/v1/generate", {"prompt": "x", "model": "no-such-model"}, 404, "model"),
        ("/v1/generate", {"prompt": "x", "colour": "red"}, 400, "colour"),
        ("/v1/generate", {"prompt": ""}, 400, "prompt"),
        ("/v1/generate", {"steps": 2}, 400, "prompt"),
        ("/v1/generate", {"prompt": "x" * 51}, 400, "prompt"),
        ("/v1/generate", {"prompt": "x", "num_images": 5, "width": 128, "height": 128}, 400, "num_images"),
        ("/v1/images/generations", {"prompt": "x", "n": 5, "size": "128x128"}, 400, "n"),
        ("/v1/generate", {"prompt": "x", "guidance_scale": "high"}, 400, "guidance_scale"),
        ("/v1/images/generations", {"prompt": "x", "size": "big"}, 400, "size"),
        ("/v1/images/generations", {"prompt": "x", "response_format": "gif"}, 400, "response_format"),
        ("/v1/images/generations", {"prompt": "x", "stream": True}, 400, "stream"),
        ("/v1/images/generations", {"prompt": "x", "n": 0}, 400, "n"),
    ],
)
def test_bad_input_gets_the_openai_error_shape_naming_the_field(server, path, body, status, param):
    response = httpx.post(f"{server}{path}", json=body, timeout=60)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["param"] == param
    assert f"`{param}`" in error["message"]


def test_other_client_errors(server):
    assert httpx.post(f"{server}/v1/generate", content=b"{not json", timeout=10,
                      headers={"Content-Type": "application/json"}).status_code == 400
    too_big = httpx.post(f"{server}/v1/generate", json={"prompt": "x" * 5000}, timeout=10)
    assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "body_too_large"
    def chunks():  # no Content-Length: the limit must hold as the body arrives
        yield b'{"prompt": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}'

    chunked = httpx.post(f"{server}/v1/generate", content=chunks(), headers={"Content-Type": "application/json"})
    assert chunked.status_code == 413 and chunked.json()["error"]["code"] == "body_too_large"
    surrogate = httpx.post(f"{server}/v1/generate", content=b'{"prompt": "a \\ud800 fox", "steps": 2}',
                           headers={"Content-Type": "application/json"})
    assert surrogate.status_code == 400 and surrogate.json()["error"]["param"] == "prompt"
    missing = httpx.get(f"{server}/v1/images/nothing-here.png")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"
    assert httpx.get(f"{server}/v1/nowhere").status_code == 404


def test_every_protected_route_needs_the_key():
    with running_server(config=ServerConfig(api_keys=("secret-1", "secret-2"))) as url:
        routes = [("GET", "/v1/models", None), ("POST", "/v1/generate", {"prompt": "x", **FAST}),
                  ("POST", "/v1/images/generations", {"prompt": "x", "size": "64x64"}),
                  ("GET", "/v1/images/anything.png", None)]
        for method, path, body in routes:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "secret-1"}):
                response = httpx.request(method, f"{url}{path}", json=body, headers=headers)
                assert response.status_code == 401, (path, headers)
                assert response.json()["error"]["type"] == "authentication_error"
        assert httpx.get(f"{url}/healthz").status_code == 200 and httpx.get(f"{url}/readyz").status_code == 200
        ok = httpx.post(f"{url}/v1/generate", json={"prompt": "x", **FAST},
                        headers={"Authorization": "Bearer secret-2"}, timeout=60)
        assert ok.status_code == 200
        client = OpenAI(base_url=f"{url}/v1", api_key="secret-1")
        assert len(client.images.generate(prompt="x", size="64x64").data) == 1


def test_a_burst_over_the_queue_gets_only_200s_and_429s_and_the_counts_add_up():
    queue = 2
    engine_config = EngineConfig(models=("tiny-sd15",), device="cpu", max_queue=queue)
    with running_server(engine_config) as url:
        body = {"prompt": "a burst", "steps": 8, "width": 64, "height": 64}

        def send(_: int) -> httpx.Response:
            return httpx.post(f"{url}/v1/generate", json=body, timeout=120)

        with ThreadPoolExecutor(5 * queue) as pool:
            responses = list(pool.map(send, range(5 * queue)))
        statuses = [r.status_code for r in responses]
        assert set(statuses) <= {200, 429} and statuses.count(200) >= queue and 429 in statuses
        assert statuses.count(200) + statuses.count(429) == 5 * queue
        for response in responses:
            if response.status_code == 200:
                assert len(response.json()["images"]) == 1
            else:
                assert response.headers["retry-after"] == "1"
                assert response.json()["error"]["code"] == "queue_full"
        assert httpx.get(f"{url}/readyz").json()["pending"] == 0  # every accepted request settled


def test_a_timeout_answers_504_and_frees_the_engine():
    with running_server() as url:
        response = httpx.post(f"{url}/v1/generate", json={"prompt": "slow", "steps": 200, "width": 256,
                                                          "height": 256, "timeout_s": 0.3}, timeout=60)
        assert response.status_code == 504 and response.json()["error"]["code"] == "timeout"
        assert response.headers["x-should-retry"] == "false"  # the openai client would otherwise run it twice more
        ok = httpx.post(f"{url}/v1/generate", json={"prompt": "next", **FAST}, timeout=60)
        assert ok.status_code == 200
        assert httpx.get(f"{url}/readyz").json()["pending"] == 0


def test_not_ready_until_the_engine_is_loaded():
    release = threading.Event()

    def slow_engine(config: EngineConfig) -> Engine:
        release.wait(30)
        return Engine(config)

    with running_server(wait_ready=False, engine_factory=slow_engine) as url:
        assert httpx.get(f"{url}/healthz").status_code == 200
        assert httpx.get(f"{url}/readyz").status_code == 503
        busy = httpx.post(f"{url}/v1/generate", json={"prompt": "x", **FAST})
        assert busy.status_code == 503 and busy.headers["retry-after"] == "5"
        release.set()
        for _ in range(600):
            if httpx.get(f"{url}/readyz").status_code == 200:
                break
            threading.Event().wait(0.05)
        assert httpx.post(f"{url}/v1/generate", json={"prompt": "x", **FAST}, timeout=60).status_code == 200


def test_a_shutdown_while_loading_does_not_wait_for_the_models():
    release, built = threading.Event(), []

    def slow_engine(config: EngineConfig) -> Engine:
        release.wait(60)  # a load (or compile warm-up) that takes minutes
        built.append(Engine(config))
        return built[-1]

    started = time.monotonic()
    with running_server(wait_ready=False, engine_factory=slow_engine) as url:
        assert httpx.get(f"{url}/readyz").json() == {"status": "loading"}
    assert time.monotonic() - started < 30  # the server stopped without the engine
    release.set()  # the load ends after the shutdown: the engine it made closes itself
    deadline = time.monotonic() + 60
    while not (built and built[0].closed):
        assert time.monotonic() < deadline, "the late engine was never closed"
        time.sleep(0.05)


def test_a_model_that_fails_to_load_keeps_readiness_red():
    with running_server(EngineConfig(models=("no-such-model",), device="cpu"), wait_ready=False) as url:
        for _ in range(200):
            status = httpx.get(f"{url}/readyz").json()["status"]
            if status != "loading":
                break
            threading.Event().wait(0.05)
        assert status == "failed"
        assert httpx.get(f"{url}/healthz").status_code == 503  # an orchestrator should restart it
        error = httpx.post(f"{url}/v1/generate", json={"prompt": "x"}).json()["error"]
        assert "failed to load" in error["message"]


def test_a_shutdown_signal_turns_readiness_red_and_refuses_new_work_while_in_flight_work_finishes():
    handle: dict = {}
    with running_server(handle=handle) as url, httpx.Client(base_url=url, timeout=120) as client:
        client.get("/readyz")  # opens the keep-alive connection the checks below reuse
        with ThreadPoolExecutor(1) as pool:
            in_flight = pool.submit(httpx.post, f"{url}/v1/generate", timeout=120,
                                    json={"prompt": "finishing", "steps": 40, "width": 128, "height": 128})
            while client.get("/readyz").json().get("pending", 0) == 0:
                pass
            state = handle["server"].config.app.state.baton
            state.start_draining()  # what BatonServer.handle_exit does first on SIGTERM
            assert client.get("/readyz").json() == {"status": "draining"}
            refused = client.post("/v1/generate", json={"prompt": "too late", **FAST})
            assert refused.status_code == 503 and "shutting down" in refused.json()["error"]["message"]
            handle["server"].handle_exit(signal.SIGTERM, None)  # the signal itself: the drain begins
            assert in_flight.result().status_code == 200  # ... and still finishes what it had


def test_the_stacked_baseline_streams_progress_and_drops_timed_out_work():
    with running_server(EngineConfig(models=("tiny-sd15",), device="cpu", mode="stacked")) as url:
        events = httpx.post(f"{url}/v1/generate", json={"prompt": "x", "stream": True, "scheduler": "euler",
                                                        "preview_every": 2, **FAST, "steps": 4}, timeout=60).text
        assert events.count("event: progress") == 4 and events.count("event: preview") == 1
        assert "event: result" in events
        slow = httpx.post(f"{url}/v1/generate", json={"prompt": "slow", "steps": 200, "width": 512, "height": 512,
                                                      "timeout_s": 0.5}, timeout=60)
        assert slow.status_code == 504
        deadline = time.monotonic() + 10  # dropped between steps, not run for another ~20 s
        while httpx.get(f"{url}/readyz").json()["pending"] != 0:
            assert time.monotonic() < deadline, "the stacked pipeline kept running a timed-out request"
            time.sleep(0.05)


def test_an_empty_key_file_is_refused(tmp_path):
    from baton.server.auth import load_api_keys

    (tmp_path / "keys").write_text("# nobody yet\n\n")
    with pytest.raises(ValueError, match="holds no keys"):
        load_api_keys(tmp_path / "keys")
