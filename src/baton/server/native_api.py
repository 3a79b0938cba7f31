"""baton's native API: ``POST /v1/generate`` with every engine option and the per-stage timings, optionally as a
stream of Server-Sent Events (step progress, cheap previews, then the result); ``GET /v1/models``, ``/v1/stats``.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import math
import time
import uuid
from collections.abc import AsyncIterator

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from PIL import Image

from baton.protocol import RequestEvents
from baton.request import GenerationRequest, GenerationResult
from baton.server.errors import ApiError, error_body, from_engine_error
from baton.server.generation import admit, cancel, generate, image_entries, timeout_for, warning_headers
from baton.server.schema import HTTP_ONLY_FIELDS, GenerateRequest
from baton.server.state import ServerState, server_state

router = APIRouter(tags=["native"])


@router.post("/v1/generate", responses={200: {"content": {"application/json": {}, "text/event-stream": {}}}})
async def generate_images(body: GenerateRequest, http_request: Request):
    """Generate images with every engine option; the answer carries the seed and each stage's timings.

    With ``stream: true`` the answer is ``text/event-stream``: ``progress`` events (``{"step", "steps"}``) after
    each denoising step, ``preview`` events every ``preview_every`` steps (PNG images from a linear map of the
    latents, no VAE), then one ``result`` event (the JSON of the non-streaming answer) or one ``error`` event."""
    state = server_state(http_request)
    request = GenerationRequest(**body.model_dump(exclude=HTTP_ONLY_FIELDS))
    if body.stream:
        return await _stream(state, body, request)
    started = time.perf_counter()
    result = await generate(state, http_request, request, body.timeout_s, endpoint="/v1/generate")
    return JSONResponse(_answer(state, body, result, started), headers=warning_headers(result.warnings))


def _answer(state: ServerState, body: GenerateRequest, result: GenerationResult, started: float) -> dict:
    return {
        "id": uuid.uuid4().hex,
        "created": int(time.time()),
        "model": body.model or state.engine.resolver.default_model,  # (not ready_engine(): it may be draining now)
        "seed": result.seed,
        "width": result.width,
        "height": result.height,
        "output_format": body.output_format,
        "latency_s": round(result.latency_s, 4),
        "timings": {
            stage: {"queue_wait_s": round(t.queue_wait_s, 5), "run_s": round(t.run_s, 5),
                    "batch_images": t.batch_images}
            for stage, t in result.timings.items()
        },
        "images": image_entries(state, result, body.output_format, body.response_format),
        "warnings": result.warnings,
    }


async def _stream(state: ServerState, body: GenerateRequest, request: GenerationRequest) -> StreamingResponse:
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[tuple] = asyncio.Queue()

    def push(*event) -> None:  # called on an engine thread
        loop.call_soon_threadsafe(events.put_nowait, event)

    callbacks = RequestEvents(
        progress=lambda done, total: push("progress", done, total, None),
        preview=(lambda done, total, rgb: push("preview", done, total, rgb)) if body.preview_every else None,
        preview_every=body.preview_every or 0,
        accepted=lambda warnings: push("accepted", 0, 0, warnings),
    )
    started = time.perf_counter()
    future, _ = admit(state, request, events=callbacks)  # bad input and a full engine answer plain JSON errors
    future.add_done_callback(lambda _: push("done", 0, 0, None))
    # The headers carry the warnings, so they wait for the engine to take the request (an engine process says
    # so over its pipe); one it refuses there still gets a plain JSON error. Events that overtake it are kept.
    early: list[tuple] = []
    deadline = loop.time() + timeout_for(state, body.timeout_s)  # one deadline, headers and stream together
    while True:
        try:
            event = await asyncio.wait_for(events.get(), max(0.0, deadline - loop.time()))
        except TimeoutError:
            if cancel(state, future):
                state.metrics.cancelled.labels("timeout").inc()
            raise from_engine_error(TimeoutError()) from None
        except asyncio.CancelledError:  # the client left before the headers
            if cancel(state, future):
                state.metrics.cancelled.labels("client_disconnected").inc()
            raise
        if event[0] == "accepted":
            warnings = event[3]
            break
        if event[0] == "done":
            if future.cancelled() or future.exception() is not None:
                raise from_engine_error(future.exception() if not future.cancelled() else TimeoutError()) from None
            warnings = future.result().warnings
            early.append(event)
            break
        early.append(event)
    later = [events.get_nowait() for _ in range(events.qsize())]
    for event in early + later:  # in the order they came
        events.put_nowait(event)

    async def stream() -> AsyncIterator[str]:
        nonlocal deadline
        while True:
            try:
                kind, done, total, rgb = await asyncio.wait_for(events.get(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                if cancel(state, future):
                    state.metrics.cancelled.labels("timeout").inc()
                    yield _event("error", _stream_error(from_engine_error(TimeoutError())))
                    return
                # it finished just now and its "done" event is on its way: wait for it without a deadline (a zero
                # timeout would cancel every get() before it ran, and spin)
                deadline = math.inf
                continue
            if kind == "accepted":  # again: a router retried it on another engine (it had not started)
                continue
            if kind == "progress":
                yield _event("progress", {"step": done, "steps": total})
            elif kind == "preview":
                images = await asyncio.to_thread(_preview_pngs, rgb)
                yield _event("preview", {"step": done, "steps": total, "images": images})
            else:
                try:
                    result = future.result()
                except Exception as exc:
                    yield _event("error", _stream_error(from_engine_error(exc)))
                    return
                state.metrics.observe_result(result)
                state.metrics.latency.labels("/v1/generate").observe(time.perf_counter() - started)
                yield _event("result", _answer(state, body, result, started))
                return

    def client_gone() -> None:
        if cancel(state, future):  # not settled nor timed out yet: the client left; free the denoiser at the next step
            state.metrics.cancelled.labels("client_disconnected").inc()

    return _EventStream(stream(), on_close=client_gone, headers=warning_headers(warnings))


class _EventStream(StreamingResponse):
    """An SSE response that calls ``on_close`` however it ends, even when cancelled before its first event (the
    generator's own ``finally`` would never run then)."""

    def __init__(self, content: AsyncIterator[str], on_close, headers: dict[str, str]) -> None:
        super().__init__(content, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **headers})
        self._on_close = on_close

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()


def _event(kind: str, data: dict) -> str:
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n"


def _stream_error(error: ApiError) -> dict:
    """An ``error`` event's data: the error's JSON, and the status a plain answer would have had."""
    return {**error_body(error), "status": error.status}


def _preview_pngs(rgb: np.ndarray) -> list[str]:
    encoded = []
    for image in rgb:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        encoded.append(base64.b64encode(buffer.getvalue()).decode("ascii"))
    return encoded


@router.get("/v1/models")
def list_models(http_request: Request) -> dict:
    """The loaded models, in OpenAI's list shape, with what baton knows of each."""
    engine = server_state(http_request).ready_engine()
    described = engine.describe()
    return {
        "object": "list",
        "data": [
            {"id": model["name"], "object": "model", "created": 0, "owned_by": "baton", **model}
            for model in described["models"]
        ],
        "engine": {key: value for key, value in described.items() if key != "models"},
    }


@router.get("/v1/stats")
def stats(http_request: Request) -> dict:
    """What is in flight now and the recent throughput (the playground's live panel reads this)."""
    state = server_state(http_request)
    # loaded is enough: while a router's engines all restart is when their stats matter most
    engine = state.engine if state.engine is not None and not state.draining else state.ready_engine()
    return {**engine.stats(), "images_per_second": round(state.metrics.images_per_second(), 3)}
