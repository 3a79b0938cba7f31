"""Running one request for a route: HTTP-level limits, admission, the timeout, and errors mapped to statuses."""

from __future__ import annotations

import asyncio
import base64
import contextlib

from fastapi import Request

from baton.errors import BatonError, InvalidRequestError
from baton.request import GenerationRequest, GenerationResult
from baton.server.app import ServerState
from baton.server.errors import ApiError, from_engine_error

MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


def server_state(request: Request) -> ServerState:
    return request.app.state.baton


async def generate(state: ServerState, request: GenerationRequest, timeout_s: float | None) -> GenerationResult:
    """Check, admit and await ``request``; a timeout drops its remaining work at the next step (504)."""
    engine = state.ready_engine()
    try:
        request = engine.resolve(request)  # the engine's own checks, naming the field (400 / 404)
    except InvalidRequestError as exc:
        raise from_engine_error(exc) from None
    _check_http_limits(state, request)
    try:
        future = engine.submit(request)
    except BatonError as exc:  # a full queue (429), a closed or dead engine (503)
        raise from_engine_error(exc) from None
    waiting = asyncio.wrap_future(future)
    try:
        return await asyncio.wait_for(waiting, timeout_s or state.config.request_timeout_s)
    except TimeoutError:
        future.cancel()  # wait_for cancelled the wrapper; make sure the engine drops the work
        raise from_engine_error(TimeoutError()) from None
    except asyncio.CancelledError:  # the client went away: free the denoiser at the next step
        future.cancel()
        raise
    except Exception as exc:
        raise from_engine_error(exc) from None


def image_entries(state: ServerState, http_request: Request, result: GenerationResult, output_format: str,
                  response_format: str) -> list[dict]:
    """``[{"b64_json": ...}]`` or ``[{"url": ...}]`` for each image of ``result``."""
    entries = []
    for data in result.encoded or []:
        if response_format == "url":
            extension = "jpg" if output_format == "jpeg" else output_format
            name = state.images.put(data, MEDIA_TYPES[output_format], extension)
            entries.append({"url": str(http_request.url_for("get_image", name=name))})
        else:
            entries.append({"b64_json": base64.b64encode(data).decode("ascii")})
    return entries


def parse_size(size: str | None, field: str = "size") -> tuple[int | None, int | None]:
    """``"WxH"`` → (W, H); ``None`` or ``"auto"`` → the model's native size."""
    if size is None or size == "auto":
        return None, None
    with contextlib.suppress(ValueError):
        width, height = (int(part) for part in size.lower().split("x"))
        return width, height
    raise ApiError(400, f"`{field}` must look like '512x512' or be 'auto', got {size!r}", param=field,
                   code="invalid_value")


def _check_http_limits(state: ServerState, request: GenerationRequest) -> None:
    config = state.config
    for field in ("prompt", "negative_prompt"):
        text = getattr(request, field)
        if text is not None and len(text) > config.max_prompt_chars:
            raise ApiError(400, f"`{field}` has {len(text)} characters; the limit is {config.max_prompt_chars}",
                           param=field, code="invalid_value")
    pixels = request.num_images * request.width * request.height
    if pixels > config.max_pixels_per_request:
        raise ApiError(400, f"`n` x `size` asks for {pixels} pixels ({request.num_images} x {request.width}x"
                            f"{request.height}); the limit per request is {config.max_pixels_per_request}",
                       param="n", code="invalid_value")
