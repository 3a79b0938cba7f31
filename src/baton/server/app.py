"""The FastAPI app: one engine, loaded in the background so ``/healthz`` answers at once and ``/readyz`` turns
green when the models are loaded and warmed; bearer-token auth on everything but the probes; a body-size limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
from collections.abc import AsyncIterator, Callable

from fastapi import Depends, FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from baton.config import EngineConfig
from baton.engine import Engine
from baton.protocol import EngineClient
from baton.server.auth import require_api_key
from baton.server.connections import BodyTimeout
from baton.server.docs import install_docs
from baton.server.errors import ApiError, error_response, install_error_handlers
from baton.server.images import ImageStore
from baton.server.metrics import ServerMetrics
from baton.server.native_api import router as native_router
from baton.server.openai_api import images_router
from baton.server.openai_api import router as openai_router
from baton.server.schema import with_engine_limits
from baton.server.state import STATIC_DIR, ServerConfig, ServerState

logger = logging.getLogger(__name__)


def create_app(engine_config: EngineConfig, config: ServerConfig | None = None,
               engine_factory: Callable[[EngineConfig], EngineClient] = Engine) -> FastAPI:
    """The app; the engine is built from ``engine_config`` in the background once the app starts.

    ``engine_factory``: what serves the requests, built from ``engine_config``: the in-process :class:`Engine`,
    or a :class:`~baton.cluster.Router` over engine processes (``baton serve --devices``); anything that
    implements :class:`~baton.protocol.EngineClient`."""
    config = config or ServerConfig()
    metrics = ServerMetrics(lambda: state.engine)  # read at scrape time, when `state` exists
    state = ServerState(config, ImageStore(config.image_ttl_s, config.image_store_bytes), metrics)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # a daemon thread, never awaited: a shutdown while the models load (minutes, with compile warm-up) must not
        # wait for them; an engine that appears after the shutdown began closes itself (_load)
        threading.Thread(target=_load, args=(state, engine_config, engine_factory), name="baton-load",
                         daemon=True).start()
        try:
            yield
        finally:
            state.start_draining()
            if state.engine is not None:  # finish what it admitted, for at most the drain timeout; fail the rest
                await asyncio.to_thread(state.engine.close, True, config.drain_timeout_s)

    app = FastAPI(title="baton", version=_version(), lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Text-to-image serving: an OpenAI-compatible images API and baton's native API.")
    install_docs(app)  # /docs and /redoc with local assets (FastAPI's load from a CDN), the favicon

    def openapi() -> dict:
        """The schema with the engine's limits on the request fields (``schema.with_engine_limits``); kept once
        the models are loaded, when every limit is known."""
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        engine = state.engine
        if engine is None:
            return with_engine_limits(schema, engine_config.limits, engine_config.limits.max_size)
        models = engine.resolver.models
        samplers = {name for spec in models.values() for name in spec.schedulers}
        # a size every model takes: a client that follows the schema is never refused for its size
        multiple = math.lcm(engine_config.limits.size_multiple, *(spec.size_multiple for spec in models.values()))
        app.openapi_schema = with_engine_limits(schema, engine_config.limits, max(engine.resolver.max_sizes.values()),
                                                {"model": list(models), "scheduler": sorted(samplers)}, multiple)
        return app.openapi_schema

    app.openapi = openapi
    app.state.baton = state
    install_error_handlers(app)

    # the last added is the outermost: the counting sees every answer, the body deadline's 408 included
    app.add_middleware(BodyTimeout, timeout_s=config.body_timeout_s)
    app.add_middleware(_BodyLimitAndCount, state=state)

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    def playground() -> FileResponse:
        """The web playground: one static page (no data in it, so no auth; its API calls carry the key)."""
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @app.get("/healthz", tags=["health"], responses={503: {"description": "the engine failed to load or died"}})
    def healthz() -> Response:
        """Alive: 200 while loading and serving; 503 once the engine failed to load or died (restart me).

        A stuck engine (see ``/readyz``) stays alive, ``{"status": "stuck", "reason": ...}``: a step that is only
        slow must not get the process killed; readiness already keeps new work away."""
        if state.load_error is not None or (state.engine is not None and state.engine.dead):
            return JSONResponse({"status": "failed" if state.load_error else "dead"}, status_code=503)
        reason = _stuck_reason(state)
        return JSONResponse({"status": "stuck", "reason": reason} if reason else {"status": "ok"})

    @app.get("/readyz", tags=["health"],
             responses={503: {"description": "loading, failed, dead, draining, or stuck (the watchdog)"}})
    def readyz() -> Response:
        """Ready: the models are loaded and warmed, the server is not shutting down, and the engine is not stuck
        (requests waiting while no stage finished any work for ``stuck_after_s``)."""
        engine = state.engine
        if engine is None or state.draining or engine.dead or engine.closed:
            status = ("draining" if state.draining else "failed" if state.load_error else
                      "loading" if engine is None else "dead" if engine.dead else "closed")
            return JSONResponse({"status": status}, status_code=503)
        reason = _stuck_reason(state)
        if reason:
            return JSONResponse({"status": "stuck", "reason": reason}, status_code=503)
        if not engine.ready:  # a router whose engine processes are all (re)starting
            return JSONResponse({"status": "starting"}, status_code=503)
        return JSONResponse({"status": "ready", "pending": state.engine.pending})

    @app.get("/metrics", tags=["health"], dependencies=[Depends(require_api_key)], response_class=Response)
    def metrics() -> Response:
        """Prometheus metrics (text format)."""
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    protected = [Depends(require_api_key)]
    app.include_router(openai_router, dependencies=protected)
    app.include_router(native_router, dependencies=protected)
    # capability URLs: the unguessable name is the credential (see ServerConfig.capability_urls)
    app.include_router(images_router, dependencies=[] if config.capability_urls else protected)
    return app


def _stuck_reason(state: ServerState) -> str | None:
    stalled = state.stuck_for()
    if stalled is None:
        return None
    return (f"the engine has finished no work (a denoising step, a batch) for {stalled:.0f} s, with "
            f"{state.engine.pending} request(s) waiting (the limit, `stuck_after_s`, is "
            f"{state.config.stuck_after_s:g} s)")


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


def _load(state: ServerState, engine_config: EngineConfig,
          factory: Callable[[EngineConfig], EngineClient]) -> None:
    try:
        engine = factory(engine_config)
    except BaseException as exc:
        state.load_error = exc
        logger.exception("the engine failed to load")
        return
    state.engine = engine
    if state.draining:  # the shutdown began while loading; it may not have seen this engine
        engine.close(drain=False)
        return
    logger.info("ready: %s loaded and warmed", ", ".join(engine.resolver.models))


def _version() -> str:
    from baton import __version__

    return __version__
