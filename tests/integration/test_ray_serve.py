"""Ray Serve (``baton.deploy.ray``): two replicas of tiny-sd15 on a local Ray on this CPU, real HTTP through Ray's
proxy (plain, repeated with one seed, streamed, refused), and the checks that need no cluster."""

from __future__ import annotations

import base64
import io
import json
import shutil
import sys
import tempfile
import time
from types import SimpleNamespace

import httpx
import pytest
from PIL import Image

from baton.config import EngineConfig
from baton.deploy.ray import APP_NAME, DEPLOYMENT_NAME, BatonReplica, RayOptions, build_app, serving

FAST = {"prompt": "a red circle", "steps": 2, "width": 64, "height": 64, "seed": 0}

# Ray 2.60's own config classes use a pydantic idiom pydantic deprecates: a warning about Ray, at its import
pytestmark = pytest.mark.filterwarnings("ignore:Using extra keyword arguments on `Field`:DeprecationWarning")


@pytest.fixture(scope="module")
def ray_url():
    """Two replicas of tiny-sd15 behind Ray's proxy on a free port; Ray is shut down however the tests end."""
    ray = pytest.importorskip("ray")

    # Ray's unix sockets live under the temp dir, and their paths must stay under 108 bytes: pytest's tmp_path
    # is too deep, so a short folder in /tmp
    temp_dir = tempfile.mkdtemp(prefix="baton-ray-", dir="/tmp")
    # as light as Ray goes: no dashboard, a small object store (nothing large travels through it), quiet workers;
    # the replicas build tiny-sd15 from its config, and a hub lookup must fail fast, not retry DNS
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20, _temp_dir=temp_dir,
             log_to_driver=False, runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}})
    try:
        # half a CPU each, so both fit in the 2 CPUs with Serve's proxy and controller; Ray then gives each
        # replica one torch thread (OMP_NUM_THREADS)
        options = RayOptions(num_replicas=2, num_cpus=0.5, num_gpus=0)
        with serving(EngineConfig(models=("tiny-sd15",), device="cpu"), options=options, port=0) as url:
            yield url
    finally:  # serving() removed baton's application (its replicas drained); this stops Ray's processes
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.timeout(240)
def test_two_replicas_serve_baton_through_rays_proxy(ray_url):
    from ray import serve

    # 1. ready as soon as serve.run returned: a replica starts only once its engine has loaded
    for _ in range(4):
        response = httpx.get(f"{ray_url}/readyz")
        assert response.status_code == 200, response.text
    deployment = serve.status().applications[APP_NAME].deployments[DEPLOYMENT_NAME]
    assert deployment.replica_states.get("RUNNING") == 2, deployment

    # 2. a plain request: a PNG of the size asked for
    response = httpx.post(f"{ray_url}/v1/generate", json=FAST, timeout=60)
    assert response.status_code == 200, response.text
    first = response.json()["images"][0]["b64_json"]
    assert Image.open(io.BytesIO(base64.b64decode(first))).size == (64, 64)

    # 3. one seed, one image, whichever replica answers (Ray's router picks; each has its own engine)
    for _ in range(3):
        again = httpx.post(f"{ray_url}/v1/generate", json=FAST, timeout=60).json()["images"][0]["b64_json"]
        assert again == first

    # 4. a bad request is refused by the replica's own checks, naming the field
    response = httpx.post(f"{ray_url}/v1/generate", json={**FAST, "steps": 0}, timeout=60)
    assert response.status_code == 400, response.text
    assert "steps" in response.text


@pytest.mark.timeout(240)
def test_a_stream_passes_rays_proxy_event_by_event(ray_url):
    body = {**FAST, "steps": 30, "scheduler": "euler", "stream": True, "seed": 1}
    arrivals: list[tuple[float, str, dict]] = []
    started = time.perf_counter()
    with httpx.stream("POST", f"{ray_url}/v1/generate", json=body, timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        kind = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                arrivals.append((time.perf_counter() - started, kind, json.loads(line.removeprefix("data: "))))
    kinds = [kind for _, kind, _ in arrivals]
    assert kinds == ["progress"] * 30 + ["result"], kinds
    assert [data["step"] for _, kind, data in arrivals if kind == "progress"] == list(range(1, 31))
    result = arrivals[-1][2]
    assert Image.open(io.BytesIO(base64.b64decode(result["images"][0]["b64_json"]))).size == (64, 64)
    # streamed, not buffered by the proxy until the end: the first step reached the client well before the result
    first_step, last = arrivals[0][0], arrivals[-1][0]
    # (a proxy that buffered would hand them all over at once; here the 30 steps take ~0.25 s)
    assert last - first_step > 0.05, [round(t, 3) for t, _, _ in arrivals]


def test_build_app_refuses_what_it_does_not_know():
    with pytest.raises(ValueError, match="unknown argument.*`modle`"):
        build_app({"modle": "tiny-sd15"})
    with pytest.raises(ValueError, match="`num_gpus` must be a number, got 'half'"):
        build_app({"num_gpus": "half"})
    with pytest.raises(ValueError, match="`num_replicas`.*cannot be combined"):
        build_app({"num_replicas": "2", "max_replicas": "4"})
    with pytest.raises(ValueError, match="`device` 'cuda:1'"):
        build_app({"device": "cuda:1"})
    with pytest.raises(ValueError, match="`num_gpus` 1 asks for a GPU.*'cpu'"):
        build_app({"device": "cpu", "num_gpus": "1"})
    with pytest.raises(ValueError, match="`keep_alive_s`"):  # Ray's proxy holds the connections
        build_app({"keep_alive_s": "5"})


def test_build_app_takes_serve_runs_strings():
    serve = pytest.importorskip("ray.serve")
    app = build_app({"models": "tiny-sd15, tiny-sdxl", "device": "cpu", "num_cpus": "0.5", "min_replicas": "0",
                     "max_replicas": "3", "target_ongoing_requests": "2", "api_keys": "k1,k2",
                     "capability_urls": "true", "request_timeout_s": "30", "preset": "fast"})
    assert isinstance(app, serve.Application)


def test_without_ray_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets when it is not installed
    with pytest.raises(ImportError, match=r"pip install 'baton\[ray\]'"):
        build_app({"models": "tiny-sd15"})


def test_the_health_check_fails_a_dead_or_unloaded_engine_but_not_a_loading_one():
    replica = BatonReplica(EngineConfig(models=("tiny-sd15",), device="cpu"), None)
    replica.check_health()  # the app is not built yet
    replica._state = SimpleNamespace(load_error=None, engine=None)  # loading
    replica.check_health()
    replica._state = SimpleNamespace(load_error=None, engine=SimpleNamespace(dead=False))
    replica.check_health()
    replica._state = SimpleNamespace(load_error=None, engine=SimpleNamespace(dead=True))
    with pytest.raises(RuntimeError, match="died"):
        replica.check_health()
    replica._state = SimpleNamespace(load_error=OSError("no such model"), engine=None)
    with pytest.raises(RuntimeError, match="no such model"):
        replica.check_health()
