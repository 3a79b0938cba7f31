"""The FastAPI app: one engine, loaded in the background so ``/healthz`` answers at once and ``/readyz`` turns
green when the models are loaded and warmed; bearer-token auth on everything but the probes; a body-size limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from baton.config import EngineConfig
from baton.engine import Engine
from baton.server.errors import ApiError, error_response, install_error_handlers
from baton.server.images import ImageStore
from baton.server.metrics import ServerMetrics

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
API_KEYS_ENV = "BATON_API_KEYS"
"""Comma-separated API keys, read when no key file is given."""


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """What the HTTP layer enforces on top of the engine's own request checks."""

    api_keys: tuple[str, ...] = ()
    """Bearer tokens accepted; empty: no auth."""
    max_body_bytes: int = 1 << 20
    """Largest request body (413 beyond)."""
    max_prompt_chars: int = 2000
    """Longest prompt or negative prompt, in characters."""
    max_pixels_per_request: int = 16 * 1024 * 1024
    """Most pixels one request may ask for: images x width x height."""
    openai_steps: int = 30
    """Denoising steps of ``/v1/images/generations`` requests (OpenAI's API has no such field); capped at the
    engine's ``limits.max_steps``."""
    request_timeout_s: float = 300.0
    """Default time a request may take; past it the answer is 504 and its remaining work is dropped."""
    image_ttl_s: float = 3600.0
    """How long an image served by URL stays available."""
    image_store_bytes: int = 512 * 1024 * 1024
    """Total bytes of images kept for URLs; the oldest go first."""

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_prompt_chars", "max_pixels_per_request", "image_store_bytes",
                     "openai_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be >= 1, got {getattr(self, name)!r}")
        for name in ("request_timeout_s", "image_ttl_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"`{name}` must be > 0, got {getattr(self, name)!r}")
        if any(not key for key in self.api_keys):
            raise ValueError("`api_keys` must not contain empty keys")


def load_api_keys(path: Path | None) -> tuple[str, ...]:
    """Keys from a file (one per line, ``#`` comments) or, without one, from ``$BATON_API_KEYS``."""
    if path is not None:
        lines = path.read_text().splitlines()
        keys = tuple(line.strip() for line in lines if line.strip() and not line.strip().startswith("#"))
        if not keys:  # an empty file must not quietly mean "no auth"
            raise ValueError(f"`--api-key-file` {str(path)!r} holds no keys")
        return keys
    return tuple(key.strip() for key in os.environ.get(API_KEYS_ENV, "").split(",") if key.strip())


@dataclass
class ServerState:
    """What the routes share: the engine once loaded, the settings, the URL image store."""

    config: ServerConfig
    images: ImageStore
    metrics: ServerMetrics
    engine: Engine | None = None
    load_error: BaseException | None = None
    draining: bool = False

    def ready_engine(self) -> Engine:
        if self.engine is None or self.draining or self.engine.closed:
            reason = ("shutting down" if self.draining else f"failed to load: {self.load_error}" if self.load_error
                      else "the engine stopped" if self.engine is not None else "loading models")
            raise ApiError(503, f"the server is not ready ({reason})", type_="server_error", code="not_ready",
                           headers={"Retry-After": "5"})
        return self.engine


def create_app(engine_config: EngineConfig, config: ServerConfig | None = None,
               engine_factory: Callable[[EngineConfig], Engine] = Engine) -> FastAPI:
    """The app; the engine is built from ``engine_config`` in the background once the app starts."""
    from baton.server.native_api import router as native_router
    from baton.server.openai_api import router as openai_router

    config = config or ServerConfig()
    metrics = ServerMetrics(lambda: state.engine)  # read at scrape time, when `state` exists
    state = ServerState(config, ImageStore(config.image_ttl_s, config.image_store_bytes), metrics)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loading = asyncio.create_task(asyncio.to_thread(_load, state, engine_config, engine_factory))
        try:
            yield
        finally:
            state.draining = True
            await loading
            if state.engine is not None:
                await asyncio.to_thread(state.engine.close)  # finishes what it admitted

    app = FastAPI(title="baton", version=_version(), lifespan=lifespan,
                  description="Text-to-image serving: an OpenAI-compatible images API and baton's native API.")
    app.state.baton = state
    install_error_handlers(app)

    app.add_middleware(_BodyLimitAndCount, state=state)

    @app.get("/", include_in_schema=False)
    def playground() -> FileResponse:
        """The web playground: one static page (no data in it, so no auth; its API calls carry the key)."""
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @app.get("/healthz", tags=["health"], responses={503: {"description": "the engine failed to load or died"}})
    def healthz() -> Response:
        """Alive: 200 while loading and serving; 503 once the engine failed to load or died (restart me)."""
        if state.load_error is not None or (state.engine is not None and state.engine.dead):
            return JSONResponse({"status": "failed" if state.load_error else "dead"}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get("/readyz", tags=["health"], responses={503: {"description": "loading, failed, dead or draining"}})
    def readyz() -> Response:
        """Ready: the models are loaded and warmed, and the server is not shutting down."""
        if state.engine is None or state.draining or state.engine.dead:
            status = ("draining" if state.draining else "failed" if state.load_error else
                      "dead" if state.engine is not None else "loading")
            return JSONResponse({"status": status}, status_code=503)
        return JSONResponse({"status": "ready", "pending": state.engine.pending})

    @app.get("/metrics", tags=["health"], dependencies=[Depends(require_api_key)], response_class=Response)
    def metrics() -> Response:
        """Prometheus metrics (text format)."""
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    protected = [Depends(require_api_key)]
    app.include_router(openai_router, dependencies=protected)
    app.include_router(native_router, dependencies=protected)
    return app


class _BodyLimitAndCount:
    """Refuse bodies over the limit (413) and count every answer by endpoint and status.

    A plain ASGI middleware, not ``@app.middleware("http")``: that wrapper stands between the route and the
    client's disconnect message, and the routes watch for it to drop abandoned work."""

    def __init__(self, app, state: ServerState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = {"code": 500}
        limit = self.state.config.max_body_bytes
        length = dict(scope["headers"]).get(b"content-length", b"")
        too_large = {"size": int(length)} if length.isdigit() and int(length) > limit else None
        received = 0

        async def counting_send(message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        async def limited_receive():
            # the body as it arrives: a chunked upload has no Content-Length to check up front; past the limit
            # the app is told the client left, and whatever it answers is dropped for the 413 below
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    too_large = {"size": received}
                    return {"type": "http.disconnect"}
            return message

        async def app_send(message) -> None:
            if too_large is None:
                await counting_send(message)

        try:
            if too_large is None:
                try:
                    await self.app(scope, limited_receive, app_send)
                except Exception:
                    if too_large is None:
                        raise
            if too_large is not None:
                response = error_response(ApiError(413, f"the request body has {too_large['size']} bytes or more; "
                                                        f"the limit is {limit}", code="body_too_large",
                                                   headers={"Connection": "close"}))  # don't read the rest
                await response(scope, receive, counting_send)
        finally:
            # the router records the matched route; a refused body is counted alike whether it was seen early or late
            endpoint = "unmatched" if too_large is not None else getattr(scope.get("route"), "path", "unmatched")
            self.state.metrics.requests.labels(endpoint, str(status["code"])).inc()


def require_api_key(request: Request) -> None:
    """Bearer-token auth, compared in constant time against every configured key."""
    keys = request.app.state.baton.config.api_keys
    if not keys:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    # headers arrive as latin-1 text: back to their bytes, to compare with the keys' UTF-8 bytes
    given = token.strip().encode("latin-1", "replace") if scheme.lower() == "bearer" else b""
    given_digest = hashlib.sha256(given).digest()
    matched = False
    for key in keys:  # digests of equal length, no early exit: the time taken tells neither the key nor its length
        matched |= hmac.compare_digest(given_digest, hashlib.sha256(key.encode("utf-8")).digest())
    if not matched:
        raise ApiError(401, "missing or invalid API key: send `Authorization: Bearer <key>`",
                       type_="authentication_error", code="invalid_api_key")


def _load(state: ServerState, engine_config: EngineConfig, factory: Callable[[EngineConfig], Engine]) -> None:
    try:
        state.engine = factory(engine_config)
        logger.info("ready: %s loaded and warmed", ", ".join(state.engine.runners))
    except BaseException as exc:
        state.load_error = exc
        logger.exception("the engine failed to load")


def _version() -> str:
    from baton import __version__

    return __version__
