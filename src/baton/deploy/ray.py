"""Ray Serve: baton's HTTP API on a Ray cluster, one in-process :class:`~baton.Engine` per replica.

Ray does what a cluster needs and baton does not redo it: its HTTP proxy routes each request to a replica, its
autoscaler adds and removes replicas on ongoing requests, and its controller restarts a replica whose health check
fails. Each replica runs baton's own FastAPI app (``baton.server.create_app``) as the ingress, so the routes, the
errors and the streaming answers are exactly those of ``baton serve``.

Three entry points:

- ``build_app(args)``: Ray Serve's application-builder convention, for ``serve run baton.deploy.ray:build_app
  models=tiny-sd15 num_gpus=0.5`` and for a Serve config file or a KubeRay ``RayService`` (``import_path:
  baton.deploy.ray:build_app``, with ``args``). ``app``: the same with every default (``serve run
  baton.deploy.ray:app``), built on first access, so importing this module stays cheap.
- ``run_ray(...)``: ``baton serve --backend ray``; starts (or joins) a Ray cluster, deploys, blocks until a signal.
- ``serving(...)``: the deploy and the clean shutdown of ``run_ray`` as a context manager, for programs and tests.

How a replica starts, and why (Ray Serve 2.60): the replica's constructor stores the configs; Ray then calls
``__serve_build_asgi_app__``, which builds the app inside the replica's own process (never in the driver, where
there may be no GPU), and runs the app's ASGI lifespan, which starts the engine's load in a background thread. A
replica counts as started, and gets traffic, once that lifespan startup returns, so here the startup also waits for
the load to finish: Ray routes nothing to a replica that would only answer 503, and ``serve.run`` returns once
every replica is ready. A load that fails fails the replica's start (through its first health check, which
Ray runs before routing to it); Ray tries again a few times (``max_constructor_retry_count``), then marks the
deployment failed with the error. When Ray stops a replica, it first waits for the requests it holds
(``graceful_shutdown_timeout_s``), then the app's lifespan shutdown drains and closes its engine, as ``baton
serve`` does after SIGTERM.

Ray is an optional dependency (``pip install 'baton[ray]'``): it is imported inside the functions that use it only.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from baton.config import EngineConfig
from baton.server.settings import ServerConfig

if TYPE_CHECKING:
    from fastapi import FastAPI
    from ray.serve import Application

logger = logging.getLogger(__name__)

APP_NAME = "baton"
"""The Ray Serve application's name (``serve status``, ``serve.delete``)."""
DEPLOYMENT_NAME = "baton"
INSTALL_HINT = "pip install 'baton[ray]'"
MAX_CONSTRUCTOR_RETRIES = 3
"""Replica starts Ray may try before the deployment is failed. Ray's default is 20, but a model that cannot load
fails alike every time, and each try may spend minutes loading (and compiling) first."""
GRACEFUL_SHUTDOWN_MARGIN_S = 10.0
"""Added to ``ServerConfig.drain_timeout_s`` for Ray's ``graceful_shutdown_timeout_s`` (after which Ray kills the
replica): the engine's abort at the end of the drain and the lifespan shutdown need a few seconds of their own."""
GPU_MEMORY_SHARE = 0.95
"""Of a fractional GPU (``num_gpus`` < 1), the share of device memory its replica may allocate: Ray's fraction is
a scheduling count, not a memory limit, so each process is capped (``torch.cuda.set_per_process_memory_fraction``)
and one replica's batch cannot take its neighbour's memory. 5% stays for each process's CUDA context."""
_LOAD_POLL_S = 0.2


@dataclass(frozen=True, slots=True)
class RayOptions:
    """How Ray Serve places and scales baton's replicas. Engine and HTTP settings are the ``EngineConfig`` and
    ``ServerConfig`` passed next to it."""

    num_gpus: float | None = None
    """GPUs per replica; a fraction packs several replicas (processes) on one GPU (0.5: two). ``None``: 1 unless
    the device is ``cpu``; ``run_ray`` on a cluster without GPUs makes it 0 for device ``auto``."""
    num_cpus: float = 1.0
    """CPUs per replica, a Ray scheduling count; on a CPU device it also sets the replica's torch threads (Ray sets
    ``OMP_NUM_THREADS`` to it, at least 1)."""
    num_replicas: int | None = None
    """A fixed replica count (no autoscaling); exclusive with ``min_replicas`` / ``max_replicas``."""
    min_replicas: int | None = None
    """Autoscaling: fewest replicas (0 scales to zero when idle; the first request then waits for a model load)."""
    max_replicas: int | None = None
    """Autoscaling: most replicas."""
    target_ongoing_requests: float = 4.0
    """Autoscaling: requests in flight per replica the autoscaler aims at (it adds replicas above, removes below)."""
    max_ongoing_requests: int = 16
    """Requests Ray sends one replica at once; more wait in Ray's queue. Above ``target_ongoing_requests`` so that
    a burst reaches the engine, whose step batching runs concurrent requests in one forward."""
    address: str | None = None
    """``run_ray`` only: ``None`` starts a Ray of its own on this machine (stopped on exit); ``auto``, ``HOST:PORT``
    or ``ray://HOST:10001`` joins that cluster, where only baton's application is removed on exit."""

    def __post_init__(self) -> None:
        _require(self.num_gpus is None or self.num_gpus >= 0, "num_gpus", self.num_gpus, "must be >= 0")
        _require(self.num_cpus >= 0, "num_cpus", self.num_cpus, "must be >= 0")
        _require(self.num_replicas is None or self.num_replicas >= 1, "num_replicas", self.num_replicas,
                 "must be >= 1")
        _require(self.min_replicas is None or self.min_replicas >= 0, "min_replicas", self.min_replicas,
                 "must be >= 0")
        _require(self.max_replicas is None or self.max_replicas >= 1, "max_replicas", self.max_replicas,
                 "must be >= 1")
        if self.num_replicas is not None and self.autoscaling:
            raise ValueError(f"`num_replicas` ({self.num_replicas}) is a fixed count and cannot be combined with "
                             f"`min_replicas` / `max_replicas` (autoscaling); give one or the other")
        _require(self.min_replicas is None or self.max_replicas is None or self.min_replicas <= self.max_replicas,
                 "min_replicas", self.min_replicas, f"must be <= `max_replicas` ({self.max_replicas})")
        _require(self.target_ongoing_requests > 0, "target_ongoing_requests", self.target_ongoing_requests,
                 "must be > 0")
        _require(self.max_ongoing_requests >= 1, "max_ongoing_requests", self.max_ongoing_requests, "must be >= 1")

    @property
    def autoscaling(self) -> bool:
        return self.min_replicas is not None or self.max_replicas is not None


# ------------------------------------------------------------------------------------------------ the replica


class BatonReplica:
    """One Ray Serve replica: baton's FastAPI app over its own in-process engine.

    Plain Python: ``application`` wraps it with ``serve.ingress()`` and ``serve.deployment`` when Ray is there, and
    Ray pickles this class by reference, so replicas import it from the installed baton."""

    def __init__(self, engine_config: EngineConfig, server_config: ServerConfig,
                 memory_fraction: float | None = None) -> None:
        self._engine_config = engine_config
        self._server_config = server_config
        self._memory_fraction = memory_fraction
        self._state = None  # the app's ServerState, once built

    def __serve_build_asgi_app__(self) -> FastAPI:
        """Ray Serve's late-bound ingress: called in the replica after ``__init__``; returns the ASGI app."""
        from baton.server import create_app
        from baton.server.auth import load_api_keys

        if self._memory_fraction is not None:
            import torch

            torch.cuda.set_per_process_memory_fraction(self._memory_fraction)  # before anything is allocated
        server_config = self._server_config
        if not server_config.api_keys:
            # the rule of `baton serve` without a key file, read where the replica runs: a Kubernetes Secret
            # reaches the worker pods' environment, not the serve config (which Ray's dashboard shows)
            server_config = dataclasses.replace(server_config, api_keys=load_api_keys(None))
        app = create_app(self._engine_config, server_config)
        self._state = app.state.baton
        _start_once_loaded(app)
        return app

    def check_health(self) -> None:
        """Ray's periodic health check: raising makes Ray replace this replica. A dead engine raises; a stuck one
        does not (as ``/healthz``: a step that is only slow must not get the replica killed)."""
        state = self._state
        if state is None:
            return
        if state.load_error is not None:
            raise RuntimeError(f"the engine failed to load: {state.load_error!r}")
        if state.engine is not None and state.engine.dead:
            raise RuntimeError("the engine died; this replica serves nothing more")


def _start_once_loaded(app: FastAPI) -> None:
    """Make the app's lifespan startup last until the engine has loaded or failed to.

    ``create_app`` loads the engine in the background so that ``baton serve`` answers ``/healthz`` at once. Under
    Ray the end of the startup is what admits a replica into routing, so it must wait (see the module docstring).
    A failed load does not raise here: Ray would report only "ASGI lifespan startup failed". The health check
    Ray runs right after the startup raises it instead, and Ray reports that error as the replica's."""
    state = app.state.baton
    started = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(asgi_app):
        async with started(asgi_app) as value:
            while state.engine is None and state.load_error is None:
                await asyncio.sleep(_LOAD_POLL_S)
            yield value

    app.router.lifespan_context = lifespan


# -------------------------------------------------------------------------------------------- the application


def application(engine_config: EngineConfig, server_config: ServerConfig | None = None,
                options: RayOptions | None = None) -> Application:
    """The Ray Serve application: a deployment of :class:`BatonReplica` with ``options``' placement and scaling."""
    server_config = server_config or ServerConfig()
    options = options or RayOptions()
    engine_config, num_gpus = _placement(engine_config, options)
    _, serve = _ray_serve()
    if options.num_replicas is not None or not options.autoscaling:
        scaling: dict[str, Any] = {"num_replicas": options.num_replicas or 1}
    else:
        low = options.min_replicas if options.min_replicas is not None else 1
        high = options.max_replicas if options.max_replicas is not None else max(low, 1)
        scaling = {"autoscaling_config": {"min_replicas": low, "max_replicas": high,
                                          "target_ongoing_requests": options.target_ongoing_requests}}
    deployment = serve.deployment(
        name=DEPLOYMENT_NAME,
        ray_actor_options={"num_gpus": num_gpus, "num_cpus": options.num_cpus},
        max_ongoing_requests=options.max_ongoing_requests,
        graceful_shutdown_timeout_s=server_config.drain_timeout_s + GRACEFUL_SHUTDOWN_MARGIN_S,
        max_constructor_retry_count=MAX_CONSTRUCTOR_RETRIES,
        **scaling,
    )(serve.ingress()(BatonReplica))
    memory_fraction = GPU_MEMORY_SHARE * num_gpus if 0 < num_gpus < 1 else None
    return deployment.bind(engine_config, server_config, memory_fraction)


def _placement(engine_config: EngineConfig, options: RayOptions) -> tuple[EngineConfig, float]:
    """The engine's device and the replica's GPUs, made to agree: Ray gives a replica the GPUs it asks for and
    numbers them from 0, so the device follows ``num_gpus`` and is never an index."""
    device = engine_config.device
    if device.startswith("cuda:"):
        raise ValueError(f"`device` {device!r} names a GPU, but under Ray each replica gets its own GPU(s) "
                         f"(`num_gpus`), numbered from 0; use 'cuda' or 'auto'")
    num_gpus = options.num_gpus if options.num_gpus is not None else (0.0 if device == "cpu" else 1.0)
    if num_gpus > 0 and device == "cpu":
        raise ValueError(f"`num_gpus` {num_gpus:g} asks for a GPU per replica, but `device` is 'cpu'; use "
                         f"`num_gpus` 0 or `device` 'auto'")
    if num_gpus == 0 and device == "cuda":
        raise ValueError("`device` 'cuda' needs `num_gpus` > 0: a replica without GPUs sees none")
    if device == "auto":  # a replica with num_gpus 0 may still see the host's GPUs: never use them unasked
        engine_config = dataclasses.replace(engine_config, device="cuda" if num_gpus > 0 else "cpu")
    return engine_config, float(num_gpus)


def _ray_serve():
    """``(ray, ray.serve)``, or an ImportError that says what to install."""
    try:
        import ray
        from ray import serve
    except ImportError as exc:
        raise ImportError(f"baton's Ray Serve backend needs Ray Serve, which is not installed here ({exc}); "
                          f"install it with: {INSTALL_HINT}") from None
    # the late-bound ingress (serve.ingress() without an app, __serve_build_asgi_app__) builds the app in each
    # replica; older Rays would need the app, with its engine state, pickled in the driver
    if inspect.signature(serve.ingress).parameters["app"].default is not None:
        raise ImportError(f"baton's Ray Serve backend needs a Ray whose `serve.ingress()` builds the app in each "
                          f"replica (tested with 2.60), found ray {ray.__version__}: {INSTALL_HINT} --upgrade")
    return ray, serve


# ------------------------------------------------------------------------------------ build_app (serve run, KubeRay)


def _integer(value: Any) -> int:
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        return int(value)
    except (TypeError, ValueError):
        raise ValueError("must be an integer") from None


def _number(value: Any) -> float:
    try:
        if isinstance(value, bool):
            raise ValueError
        return float(value)
    except (TypeError, ValueError):
        raise ValueError("must be a number") from None


def _switch(value: Any) -> bool:
    text = str(value).strip().lower()
    if text not in ("true", "false", "1", "0", "yes", "no"):
        raise ValueError("must be true or false")
    return text in ("true", "1", "yes")


def _names(value: Any) -> tuple[str, ...]:
    """A list, or one comma-separated string (how ``serve run`` passes every arg)."""
    if not isinstance(value, str | list | tuple):
        raise ValueError("must be a comma-separated string or a list")
    items = value.split(",") if isinstance(value, str) else value
    return tuple(str(item).strip() for item in items if str(item).strip())


def _text(value: Any) -> str:
    return str(value)


_ENGINE_ARGS: dict[str, Callable[[Any], Any]] = {
    "models": _names, "device": _text, "dtype": _text, "max_queue": _integer, "max_queued_pixel_steps": _integer,
}
_RAY_ARGS: dict[str, Callable[[Any], Any]] = {
    "num_gpus": _number, "num_cpus": _number, "num_replicas": _integer, "min_replicas": _integer,
    "max_replicas": _integer, "target_ongoing_requests": _number, "max_ongoing_requests": _integer,
}
_BY_ANNOTATION: dict[str, Callable[[Any], Any]] = {
    "int": _integer, "float": _number, "bool": _switch, "str | None": _text, "tuple[str, ...]": _names,
}
_PROXY_OWNED = ("header_timeout_s", "keep_alive_s")
"""ServerConfig fields for baton's own uvicorn; under Ray, its proxy holds the connections (its ``http_options``)."""
_SERVER_ARGS: dict[str, Callable[[Any], Any]] = {
    name: _BY_ANNOTATION[spec.type] for name, spec in ServerConfig.__dataclass_fields__.items()
    if name not in _PROXY_OWNED and spec.type in _BY_ANNOTATION
}
BUILD_APP_ARGS: tuple[str, ...] = (*_ENGINE_ARGS, "preset", *_RAY_ARGS, *_SERVER_ARGS)
"""The keys ``build_app`` takes; any other is refused."""


def build_app(args: dict) -> Application:
    """Ray Serve's application builder: ``serve run baton.deploy.ray:build_app models=tiny-sd15 num_gpus=0.5``.

    ``args`` (strings from ``serve run``, typed values from a config file's ``args``):

    - engine: ``models`` (comma-separated or a list; the first is the default), ``device`` (``auto``: ``cuda``
      when ``num_gpus`` > 0, else ``cpu``), ``dtype``, ``preset``, ``max_queue``, ``max_queued_pixel_steps``;
    - Ray: ``num_gpus`` (default 1, 0 for device ``cpu``; fractions share a GPU), ``num_cpus``, either
      ``num_replicas`` or ``min_replicas``/``max_replicas`` with ``target_ongoing_requests`` (autoscaling),
      ``max_ongoing_requests`` (see :class:`RayOptions`);
    - HTTP: the :class:`~baton.server.settings.ServerConfig` fields (``api_keys``, ``request_timeout_s``,
      ``drain_timeout_s``, ...) but the connection timeouts, which are Ray's proxy's. Without ``api_keys``, each
      replica reads ``$BATON_API_KEYS``, as ``baton serve`` does.
    """
    unknown = sorted(set(args) - set(BUILD_APP_ARGS))
    if unknown:
        raise ValueError(f"unknown argument(s) {', '.join(f'`{name}`' for name in unknown)}; baton's Ray Serve "
                         f"application takes {', '.join(BUILD_APP_ARGS)}")
    parsed: dict[str, Any] = {}
    for name, value in args.items():
        parse = {**_ENGINE_ARGS, **_RAY_ARGS, **_SERVER_ARGS, "preset": _text}[name]
        try:
            parsed[name] = parse(value)
        except ValueError as exc:
            raise ValueError(f"`{name}` {exc}, got {value!r}") from None
    options = RayOptions(**{name: parsed[name] for name in _RAY_ARGS if name in parsed})
    engine_config = EngineConfig(**{name: parsed[name] for name in _ENGINE_ARGS if name in parsed})
    if "preset" in parsed:
        from baton.optim.presets import preset_config

        placed, _ = _placement(engine_config, options)  # a preset's options differ by device type
        engine_config = preset_config(parsed["preset"], placed.device, engine_config)
    server_config = ServerConfig(**{name: parsed[name] for name in _SERVER_ARGS if name in parsed})
    return application(engine_config, server_config, options)


def __getattr__(name: str):
    # `app` for `serve run baton.deploy.ray:app`, built on first access: a module-level Application would import
    # Ray (and check the install) on every `import baton.deploy.ray`
    if name == "app":
        return build_app({})
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ------------------------------------------------------------------------------- run_ray (baton serve --backend ray)


@contextlib.contextmanager
def serving(engine_config: EngineConfig, server_config: ServerConfig | None = None,
            options: RayOptions | None = None, host: str = "127.0.0.1", port: int = 8000,
            announce: Callable[[str], None] | None = None) -> Iterator[str]:
    """Deploy baton on Ray Serve; yields the URL once every replica is ready; removes it on exit.

    Ray: used as it is when this process has initialized it already (nothing of Ray's is stopped on exit but
    baton's application); else ``options.address`` (see :class:`RayOptions`): a Ray of its own, stopped on exit,
    or a cluster joined, where only baton's application is removed on exit."""
    server_config = server_config or ServerConfig()
    options = options or RayOptions()
    say = announce or logger.info
    _placement(engine_config, options)  # 1. settings: whatever cannot run fails before any Ray process starts
    ray, serve = _ray_serve()
    embedded = ray.is_initialized()
    own_cluster = not embedded and options.address is None
    if port == 0 or own_cluster:  # the proxy binds on this machine: a busy port is one error now, not a retry loop
        from baton.server.run import bind_socket

        with bind_socket(host, port) as sock:
            port = sock.getsockname()[1]
    # 2. Ray, then Serve's proxy on host:port (on a joined cluster whose Serve runs already, its options stay)
    if not embedded:
        ray.init(address="local" if own_cluster else options.address)
    try:
        if options.num_gpus is None and engine_config.device == "auto" and not ray.cluster_resources().get("GPU"):
            options = dataclasses.replace(options, num_gpus=0)  # else the replicas would wait for GPUs forever
        serve.start(http_options={"host": host, "port": port})
        shown = f"[{host}]" if ":" in host else host
        url = f"http://{shown}:{port}"
        # 3. the replicas load their engines; serve.run returns once every one is ready (or raises)
        app = application(engine_config, server_config, options)
        say(f"Ray Serve is starting baton ({', '.join(engine_config.models)}) at {url}; loading the models …")
        try:
            serve.run(app, name=APP_NAME, route_prefix="/")
        except RuntimeError as exc:  # Ray's "deployment failed"; the replicas' own error is in the status
            from baton.errors import BatonError

            raise BatonError(f"Ray Serve could not start baton's replicas: {exc} {_failure(serve)}") from None
        yield url
    finally:
        # 4. replicas drain (Ray's graceful shutdown, then each engine's), then what was started here stops
        try:
            # the application first, while the proxy still delivers the answers of what the replicas finish
            # (serve.shutdown alone stops the proxy at once and cuts those connections)
            serve.delete(APP_NAME)
            if own_cluster:
                serve.shutdown()
        except KeyboardInterrupt:
            logger.warning("second interrupt: stopping the replicas without waiting for their drain")
        except Exception:  # the shutdown goes on: what is left dies with Ray below
            logger.exception("removing baton's Ray Serve application failed")
        finally:
            if not embedded:
                ray.shutdown()


def _failure(serve) -> str:
    """The last line of the deployment's status message (a replica's traceback ends with the load error)."""
    try:
        status = serve.status().applications.get(APP_NAME)
        message = status.deployments[DEPLOYMENT_NAME].message if status else ""
    except Exception:  # a status that cannot be read must not hide the failure being reported
        return ""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return f"({lines[-1]})" if lines else ""


def run_ray(engine_config: EngineConfig, server_config: ServerConfig | None, ray_options: RayOptions | None,
            host: str, port: int, announce: Callable[[str], None] | None = None) -> int:
    """``baton serve --backend ray``: deploy (see :func:`serving`), announce the URL, serve until SIGTERM or
    Ctrl-C, then drain and shut down; the exit status (0 after SIGTERM, 130 after Ctrl-C). A second signal
    during the drain stops at once."""
    say = announce or logger.info
    stop = threading.Event()

    def on_term(signum, frame) -> None:
        if stop.is_set():
            raise KeyboardInterrupt  # a second signal: serving() stops without waiting for the drain
        stop.set()

    previous = None
    interrupted = False
    try:
        with serving(engine_config, server_config, ray_options, host, port, announce) as url:
            # here, after ray.init, which installs a SIGTERM handler that exits at once, skipping the drain
            previous = signal.signal(signal.SIGTERM, on_term)
            say(f"baton is ready at {url} (Ray Serve; Ctrl-C or SIGTERM to stop)")
            try:
                while not stop.wait(0.5):
                    pass
            except KeyboardInterrupt:
                interrupted = True
            stop.set()
            say("stopping: the replicas finish what they hold, then Ray shuts down (a second signal: at once)")
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 130 if interrupted else 0


def _require(ok: bool, name: str, value: object, rule: str) -> None:
    if not ok:
        raise ValueError(f"`{name}` {rule}, got {value!r}")

