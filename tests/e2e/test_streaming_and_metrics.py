"""Server-Sent Events, cancellation when a client leaves, and the Prometheus metrics that show it."""

from __future__ import annotations

import base64
import io
import json
import re
import time

import httpx
import pytest
from PIL import Image

from tests.e2e.conftest import running_server

FAST = {"steps": 2, "width": 64, "height": 64}


@pytest.fixture(scope="module")
def server():
    with running_server() as url:
        yield url


def sse_events(response: httpx.Response) -> list[tuple[str, dict]]:
    events = []
    for block in response.text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    return events


def metric(url: str, name: str, **labels) -> float:
    text = httpx.get(f"{url}/metrics").text
    selector = ",".join(f'{key}="{value}"' for key, value in labels.items())
    pattern = rf"^{name}{{{selector}}} (\S+)$" if labels else rf"^{name} (\S+)$"
    match = re.search(pattern, text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_a_stream_carries_progress_previews_and_the_result(server):
    body = {"prompt": "a fox", "steps": 6, "width": 64, "height": 64, "num_images": 2, "seed": 3,
            "scheduler": "euler", "stream": True, "preview_every": 2}
    response = httpx.post(f"{server}/v1/generate", json=body, timeout=60)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response)
    kinds = [kind for kind, _ in events]
    assert kinds == ["progress", "progress", "preview", "progress", "progress", "preview", "progress", "progress",
                     "result"]
    assert [data["step"] for kind, data in events if kind == "progress"] == [1, 2, 3, 4, 5, 6]
    preview = next(data for kind, data in events if kind == "preview")
    assert len(preview["images"]) == 2
    assert Image.open(io.BytesIO(base64.b64decode(preview["images"][0]))).size == (8, 8)  # latent resolution
    result = events[-1][1]
    plain = httpx.post(f"{server}/v1/generate", json={**body, "stream": False}, timeout=60).json()
    assert result["images"] == plain["images"] and result["seed"] == 3


def test_bad_input_on_a_stream_is_a_plain_json_error(server):
    response = httpx.post(f"{server}/v1/generate", json={"prompt": "x", "width": 500, "stream": True})
    assert response.status_code == 400 and response.json()["error"]["param"] == "width"


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_leaves_frees_the_denoiser_and_is_counted(server, stream):
    before = metric(server, "baton_requests_cancelled_total", reason="client_disconnected")
    body = {"prompt": "abandoned", "steps": 200, "width": 512, "height": 512, "stream": stream}  # ~20 s to run
    if stream:  # read the first event, then hang up
        with httpx.stream("POST", f"{server}/v1/generate", json=body, timeout=30) as response:
            assert next(response.iter_lines()).startswith("event: progress")
    else:  # give up waiting
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{server}/v1/generate", json=body, timeout=httpx.Timeout(0.5, connect=5))
    deadline = time.monotonic() + 10
    while (stats := httpx.get(f"{server}/v1/stats").json())["pending"] != 0:  # dropped at a step, not run to the end
        assert time.monotonic() < deadline, "the abandoned request kept running"
        time.sleep(0.05)
    # every count agrees at once: nothing denoising, queued or counted as work for a request that is gone
    assert stats["denoising"] == 0 and stats["queued_pixel_steps"] == 0 and set(stats["queued"].values()) == {0}
    assert metric(server, "baton_requests_cancelled_total", reason="client_disconnected") == before + 1


def test_metrics_count_requests_stages_and_throughput(server):
    httpx.post(f"{server}/v1/generate", json={"prompt": "counted", **FAST}, timeout=60)
    text = httpx.get(f"{server}/metrics").text
    assert metric(server, "baton_requests_total", endpoint="/v1/generate", status="200") >= 1
    assert metric(server, "baton_images_total") >= 1
    for stage in ("text_encode", "denoise", "vae_decode", "image_encode"):
        assert f'baton_stage_run_seconds_count{{stage="{stage}"}}' in text
        assert f'baton_stage_queue_wait_seconds_count{{stage="{stage}"}}' in text
    assert 'baton_queue_depth{stage="denoise"} 0.0' in text
    assert "baton_denoiser_batch_images_count" in text and "baton_pending_requests 0.0" in text
    assert metric(server, "baton_images_per_second") > 0
    assert metric(server, "baton_device_memory_bytes", device="cpu", engine="0") > 1e7
    stats = httpx.get(f"{server}/v1/stats").json()
    assert stats["pending"] == 0 and stats["images_per_second"] > 0 and "denoise" in stats["queued"]


def test_a_timed_out_stream_ends_with_an_error_event(server):
    body = {"prompt": "slow", "steps": 200, "width": 256, "height": 256, "stream": True, "timeout_s": 0.3}
    before = {reason: metric(server, "baton_requests_cancelled_total", reason=reason)
              for reason in ("timeout", "client_disconnected")}
    events = sse_events(httpx.post(f"{server}/v1/generate", json=body, timeout=60))
    assert events[-1][0] == "error" and events[-1][1]["status"] == 504
    time.sleep(0.3)  # the stream's end is seen after the last event: a double count would land by now
    assert metric(server, "baton_requests_cancelled_total", reason="timeout") == before["timeout"] + 1
    assert metric(server, "baton_requests_cancelled_total", reason="client_disconnected") == \
        before["client_disconnected"]  # counted once, as a timeout
