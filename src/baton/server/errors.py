"""Errors in the OpenAI error shape: ``{"error": {"message", "type", "param", "code"}}``.

Bad input is a 400 that names the field; an unknown model or image is a 404; a full queue a 429 with
``Retry-After``; a request that ran out of time a 504; an engine that cannot serve a 503. A 500 only ever means a
stage broke while running the request, never bad input.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from baton.errors import (
    EngineClosedError,
    EngineDeadError,
    InvalidRequestError,
    QueueFullError,
    StageError,
)

RETRY_AFTER_S = 1


class ApiError(Exception):
    """An error answered as-is: status, message and the OpenAI fields."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code
        self.headers = headers or {}


def error_response(error: ApiError) -> JSONResponse:
    body = {"error": {"message": error.message, "type": error.type, "param": error.param, "code": error.code}}
    return JSONResponse(body, status_code=error.status, headers=error.headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        location = [str(part) for part in first.get("loc", ()) if part != "body"]
        field = ".".join(location) or None
        message = first.get("msg", "invalid request")
        if field:
            message = f"`{field}`: {message}"
            if "input" in first and first.get("type") != "missing":
                message += f", got {first['input']!r}"
        return error_response(ApiError(400, message, param=field, code=first.get("type")))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        return error_response(from_engine_error(exc))  # a bug of ours: still the documented shape

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return error_response(ApiError(exc.status_code, str(exc.detail), type_=kind, headers=exc.headers))


def from_engine_error(exc: BaseException) -> ApiError:
    """The HTTP answer for an error the engine raised for one request."""
    if isinstance(exc, InvalidRequestError):
        status = 404 if exc.field == "model" else 400
        kind = "not_found_error" if status == 404 else "invalid_request_error"
        return ApiError(status, str(exc), type_=kind, param=exc.field, code="invalid_value")
    if isinstance(exc, QueueFullError):
        return ApiError(429, f"{exc}", type_="rate_limit_error", code="queue_full",
                        headers={"Retry-After": str(RETRY_AFTER_S)})
    # the openai client retries any 5xx twice unless told not to: a timed-out or failed generation would run 3x
    no_retry = {"x-should-retry": "false"}
    if isinstance(exc, TimeoutError):
        return ApiError(504, "the request did not finish within its timeout; its remaining work was dropped",
                        type_="timeout_error", code="timeout", headers=no_retry)
    if isinstance(exc, (EngineClosedError, EngineDeadError)):
        return ApiError(503, str(exc), type_="server_error", code="unavailable", headers={"Retry-After": "5"})
    if isinstance(exc, StageError):
        return ApiError(500, str(exc), type_="server_error", code="stage_failed", headers=no_retry)
    return ApiError(500, f"{type(exc).__name__}: {exc}", type_="server_error", code="internal", headers=no_retry)
