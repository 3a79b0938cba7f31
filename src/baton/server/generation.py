"""Running one request for a route: HTTP-level limits, admission, the timeout, a client that leaves, and errors
mapped to statuses. Both ends drop the request's remaining work at the next denoising step (the future is
cancelled) and are counted in ``baton_requests_cancelled``."""

from __future__ import annotations

import asyncio
import base64
import time
from concurrent.futures import Future

from fastapi import Request

from baton.errors import BatonError, InvalidRequestError
from baton.protocol import RequestEvents, cancel_future
from baton.request import GenerationRequest, GenerationResult
from baton.request import parse_size as parse_size_text
from baton.server.errors import ApiError, Params, from_engine_error
from baton.server.state import ServerState

MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
DISCONNECT_POLL_S = 0.1
IMAGE_ROUTE = "/v1/images"
WARNINGS_HEADER = "X-Baton-Warnings"


def admit(state: ServerState, request: GenerationRequest, params: Params | None = None,
          events: RequestEvents | None = None) -> tuple[Future, GenerationRequest]:
    """Check and submit ``request`` (400/404 for bad input, 429 when full, 503 when not serving); returns its
    future and the request as resolved (the model's defaults filled in). ``params``: what the endpoint's clients
    call the engine's fields, for errors."""
    engine = state.ready_engine()
    try:
        request = engine.resolve(request)  # the engine's own checks, naming the field
    except InvalidRequestError as exc:
        raise from_engine_error(exc, params) from None
    _check_http_limits(state, request, params or {})
    try:
        return engine.submit(request, events), request
    except BatonError as exc:  # a full queue, a closed or dead engine
        raise from_engine_error(exc, params) from None


def timeout_for(state: ServerState, asked_s: float | None) -> float:
    """The request's own timeout, never longer than the server's."""
    limit = state.config.request_timeout_s
    return limit if asked_s is None else min(asked_s, limit)


async def generate(state: ServerState, http_request: Request, request: GenerationRequest,
                   timeout_s: float | None, endpoint: str, params: Params | None = None) -> GenerationResult:
    """Admit and await ``request``. A timeout answers 504; a client that leaves gets nothing (499 in the logs)."""
    started = time.perf_counter()
    future, _ = admit(state, request, params)
    waiting = asyncio.wrap_future(future)
    gone = asyncio.create_task(_client_gone(http_request))
    try:
        done, _ = await asyncio.wait({waiting, gone}, timeout=timeout_for(state, timeout_s),
                                     return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:  # the server cancelled this handler: the client left, or shutdown
        if cancel(state, future):
            state.metrics.cancelled.labels("client_disconnected").inc()
        raise
    finally:
        gone.cancel()
    # cancel() makes the engine drop the remaining work at its next step; it fails when the result came just now
    if waiting not in done and cancel(state, future):
        reason = "client_disconnected" if gone in done else "timeout"
        state.metrics.cancelled.labels(reason).inc()
        if reason == "timeout":
            raise from_engine_error(TimeoutError())
        raise ApiError(499, "the client closed the connection", code="client_closed_request")
    try:
        result = future.result()
    except Exception as exc:
        raise from_engine_error(exc, params) from None
    state.metrics.observe_result(result)
    state.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)
    return result


def cancel(state: ServerState, future: Future) -> bool:
    """Drop the request's remaining work; ``True`` only for the call that cancelled it (each cancellation is
    counted once). Through the engine: a remote engine's process must hear of it."""
    engine = state.engine
    return engine.cancel(future) if engine is not None else cancel_future(future)


async def _client_gone(http_request: Request) -> None:
    while not await http_request.is_disconnected():
        await asyncio.sleep(DISCONNECT_POLL_S)


def image_entries(state: ServerState, result: GenerationResult, output_format: str,
                  response_format: str) -> list[dict]:
    """``[{"b64_json": ...}]`` or ``[{"url": ...}]`` for each image of ``result``.

    URLs start with ``ServerConfig.public_url``, or are relative: never built from the request's ``Host`` or
    ``X-Forwarded-*`` headers, which the client chooses."""
    entries = []
    base = (state.config.public_url or "").rstrip("/")
    for data in result.encoded or []:
        if response_format == "url":
            extension = "jpg" if output_format == "jpeg" else output_format
            name = state.images.put(data, MEDIA_TYPES[output_format], extension)
            entries.append({"url": f"{base}{IMAGE_ROUTE}/{name}"})
        else:
            entries.append({"b64_json": base64.b64encode(data).decode("ascii")})
    return entries


def parse_size(size: str | None, field: str = "size") -> tuple[int | None, int | None]:
    """``"WxH"`` → (W, H); ``None`` or ``"auto"`` → the model's native size."""
    if size is None or size == "auto":
        return None, None
    try:
        return parse_size_text(size)
    except ValueError:
        raise ApiError(400, f"`{field}` must be WIDTHxHEIGHT in ASCII digits (like '512x512') or 'auto', "
                            f"got {size!r}", param=field, code="invalid_value") from None


def warning_headers(warnings: list[str]) -> dict[str, str]:
    """The answer's warnings as a header too, for clients that only look at headers (ASCII, one line)."""
    return {WARNINGS_HEADER: "; ".join(warnings).replace("`", "")} if warnings else {}


def _check_http_limits(state: ServerState, request: GenerationRequest, params: Params) -> None:
    config = state.config
    for field in ("prompt", "negative_prompt"):
        text = getattr(request, field)
        if text is not None and len(text) > config.max_prompt_chars:
            raise ApiError(400, f"`{field}` has {len(text)} characters; the limit is {config.max_prompt_chars}",
                           param=field, code="invalid_value")
    pixels = request.num_images * request.width * request.height
    if pixels > config.max_pixels_per_request:
        count_field = params.get("num_images", ("num_images", None))[0]
        raise ApiError(400, f"`{count_field}` x the size asks for {pixels} pixels ({request.num_images} x "
                            f"{request.width}x{request.height}); the limit per request is "
                            f"{config.max_pixels_per_request}", param=count_field, code="invalid_value")
