"""Errors in the OpenAI error shape: ``{"error": {"message", "type", "param", "code"}}``.

Bad input is a 400 that names the field; an unknown model or image is a 404; a full queue a 429 with
``Retry-After``; a request that ran out of time a 504; an engine that cannot serve a 503. A 500 only ever means a
stage broke while running the request, never bad input.
"""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from baton.errors import (
    EngineClosedError,
    EngineDeadError,
    EngineProcessLostError,
    InvalidRequestError,
    QueueFullError,
    StageError,
)

Params = Mapping[str, tuple[str, str | None]]
"""Engine fields an endpoint's clients call otherwise: ``{field: (the client's name, which part of it)}``."""
RETRY_AFTER_S = 1
"""Seconds a client should wait after a full queue (429)."""
RETRY_AFTER_UNAVAILABLE_S = 5
"""Seconds a client should wait after a 503 (loading, draining, a closed engine)."""


class ApiError(Exception):
    """An error answered as-is: status, message and the OpenAI fields."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code
        self.headers = headers or {}


def error_body(error: ApiError) -> dict:
    """The JSON of an error answer: OpenAI's shape."""
    return {"error": {"message": error.message, "type": error.type, "param": error.param, "code": error.code}}


def error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(error_body(error), status_code=error.status, headers=error.headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(_body_error(request, exc))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        return error_response(from_engine_error(exc))  # a bug of ours: still the documented shape

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return error_response(ApiError(exc.status_code, str(exc.detail), type_=kind, headers=exc.headers))


def _body_error(request: Request, exc: RequestValidationError) -> ApiError:
    """What was wrong with a request's body, in the order a client should fix it: the media type, an empty body,
    JSON that does not parse, then the first field that does not fit (named as the client sent it)."""
    errors = exc.errors()
    first = errors[0] if errors else {}
    location = [part for part in first.get("loc", ()) if part != "body"]
    if request.method in ("POST", "PUT", "PATCH") and first.get("loc", ("",))[0] == "body":
        if first.get("type") == "missing" and not location:
            return ApiError(400, "the request body is empty; send a JSON object", code="empty_body")
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type != "application/json" and not media_type.endswith("+json"):
            given = f"got {media_type!r}" if media_type else "none was sent"
            return ApiError(415, f"the body must be JSON: send `Content-Type: application/json` ({given})",
                            code="unsupported_media_type")
    if first.get("type") == "json_invalid":
        position = location[0] if location and isinstance(location[0], int) else 0
        text = exc.body if isinstance(exc.body, str) else ""
        line = text.count("\n", 0, position) + 1
        column = position - (text.rfind("\n", 0, position) + 1) + 1
        reason = first.get("ctx", {}).get("error", "invalid JSON")
        return ApiError(400, f"the body is not valid JSON: {reason} at line {line} column {column}",
                        code="invalid_json")
    field = ".".join(str(part) for part in location) or None
    message = first.get("msg", "invalid request")
    if field:
        message = f"`{field}`: {message}"
        if "input" in first and first.get("type") != "missing":
            message += f", got {first['input']!r}"
    return ApiError(400, message, param=field, code=first.get("type"))


def from_engine_error(exc: BaseException, params: Params | None = None) -> ApiError:
    """The HTTP answer for an error the engine raised for one request.

    ``params``: engine fields the endpoint's clients call otherwise (OpenAI's ``n`` for ``num_images``), as
    ``{field: (client's name, which part of it)}``, so that an error names what the client sent."""
    if isinstance(exc, InvalidRequestError):
        status = 404 if exc.field == "model" else 400
        kind = "not_found_error" if status == 404 else "invalid_request_error"
        param, part = (params or {}).get(exc.field, (exc.field, None))
        message = str(exc) if param == exc.field else (
            f"`{param}`{f' ({part})' if part else ''} {exc.allowed}, got {exc.value!r}")
        return ApiError(status, message, type_=kind, param=param, code="invalid_value")
    if isinstance(exc, QueueFullError):
        return ApiError(429, f"{exc}", type_="rate_limit_error", code="queue_full",
                        headers={"Retry-After": str(RETRY_AFTER_S)})
    # the openai client retries any 5xx twice unless told not to: a timed-out or failed generation would run 3x
    no_retry = {"x-should-retry": "false"}
    if isinstance(exc, TimeoutError):
        return ApiError(504, "the request did not finish within its timeout; its remaining work was dropped",
                        type_="timeout_error", code="timeout", headers=no_retry)
    if isinstance(exc, EngineProcessLostError):  # the work was lost, not refused: sending it again is right
        return ApiError(503, str(exc), type_="server_error", code="engine_lost",
                        headers={"Retry-After": "1", "x-should-retry": "true"})
    if isinstance(exc, (EngineClosedError, EngineDeadError)):
        return ApiError(503, str(exc), type_="server_error", code="unavailable",
                        headers={"Retry-After": str(RETRY_AFTER_UNAVAILABLE_S)})
    if isinstance(exc, StageError):
        return ApiError(500, str(exc), type_="server_error", code="stage_failed", headers=no_retry)
    return ApiError(500, f"{type(exc).__name__}: {exc}", type_="server_error", code="internal", headers=no_retry)
