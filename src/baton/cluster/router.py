"""Several engine processes behind one front: :class:`Router`, and the policy it routes with,
:func:`choose_engine`.

``baton serve --devices 0,1,2,3 --replicas-per-device K`` runs K engine processes per device, each with its own
CUDA context and its own GIL. The router sends each request to a ready engine that holds its model and has the
least outstanding work, counted in pixel-steps (never round-robin: a 1024² request is 16 times a 256² one). An
engine process that dies is restarted; a request it held is retried once on another engine if it had not started
denoising, else it fails with :class:`~baton.EngineProcessLostError` (503, ``x-should-retry: true``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import torch

from baton.cluster.remote import RemoteEngine, set_exception, set_result
from baton.config import EngineConfig
from baton.engine import memory_bytes
from baton.errors import EngineClosedError, EngineProcessLostError
from baton.protocol import EngineHealth, RequestEvents, cancel_future
from baton.request import GenerationRequest, GenerationResult
from baton.resolver import RequestResolver

logger = logging.getLogger(__name__)

RETRY_WAIT_S = 30.0
"""How long a request whose engine died before it started denoising waits for another engine to take it."""
RESTART_BACKOFF_S = (0.0, 1.0, 2.0, 5.0, 10.0, 30.0)
"""Delay before a restart, by how many times in a row the slot's engine died loading or within
``STABLE_AFTER_S`` of being ready: the first at once, then backing off; one that ran longer restarts at once."""
STABLE_AFTER_S = 60.0
_SUPERVISE_EVERY_S = 0.1


@dataclass(frozen=True, slots=True)
class EngineLoad:
    """What the routing policy knows of one engine."""

    index: int
    ready: bool
    """Loaded and taking work."""
    stuck: bool
    """The watchdog's verdict: a step ran, or requests waited without progress, for ``stuck_after_s``."""
    models: frozenset[str]
    queued_pixel_steps: int
    """Work sent to it and not settled: images x width x height x steps."""
    pending: int


def choose_engine(loads: Sequence[EngineLoad], model: str) -> int | None:
    """The engine for a request to ``model``: among those ready, not stuck and holding the model, the one with
    the least outstanding pixel-steps (then the fewest requests, then the lowest index); ``None`` when none can
    take it. Pure: no I/O, no clocks."""
    candidates = [load for load in loads if load.ready and not load.stuck and model in load.models]
    if not candidates:
        return None
    return min(candidates, key=lambda load: (load.queued_pixel_steps, load.pending, load.index)).index


def parse_devices(text: str) -> list[str]:
    """``"0,1"`` → ``["cuda:0", "cuda:1"]``; ``"cpu,cpu"`` and ``"cuda:2"`` as given. Raises ``ValueError``
    naming ``--devices``."""
    devices = []
    for item in (part.strip() for part in text.split(",")):
        if item.isdigit():
            devices.append(f"cuda:{item}")
        elif item == "cpu" or item == "cuda" or (item.startswith("cuda:") and item[5:].isdigit()):
            devices.append(item)
        else:
            raise ValueError(f"`--devices` takes a comma-separated list of GPU indices (0,1), cuda:N or cpu, got "
                             f"{text!r}")
    return devices


@dataclass(slots=True)
class _Slot:
    """One engine position (a device and a replica on it) and the process that fills it now."""

    index: int
    device: str
    name: str
    engine: RemoteEngine
    restarts: int = 0
    quick_deaths: int = 0
    """Deaths in a row soon after a start (``STABLE_AFTER_S``): how far the next restart backs off."""
    restart_at: float | None = None
    """When the supervisor starts its next process (``None``: none is due)."""


@dataclass(slots=True)
class _Retry:
    outer: Future
    request: GenerationRequest
    events: RequestEvents | None
    deadline: float
    reason: str = field(default="")


class Router:
    """Engine processes behind one :class:`~baton.protocol.EngineClient`.

    Args:
        config: every engine's settings; each process gets it with its own ``device``.
        devices: one entry per device (``parse_devices``); each gets ``replicas_per_device`` processes.
        replicas_per_device: engine processes per device (GPU sharing by time-slicing, or under MPS). On CUDA
            each may allocate ``0.95 / replicas_per_device`` of the device's memory.
        threads_per_engine: intra-op threads per process; ``None``: 1 on a CPU device (the processes share
            its cores), else the host's cores divided among the processes.
        stuck_after_s: an engine whose health reads stalled this long gets no new work.
        engine_factory: builds a slot's engine process (tests); default :class:`RemoteEngine`.

    The constructor returns once one engine is ready (the others go on loading), or raises ``ValueError`` when
    every one failed to load.
    """

    def __init__(self, config: EngineConfig, devices: Sequence[str], *, replicas_per_device: int = 1,
                 threads_per_engine: int | None = None, stuck_after_s: float = 120.0,
                 engine_factory: Callable[..., RemoteEngine] = RemoteEngine) -> None:
        if not devices:
            raise ValueError("`--devices` must name at least one device")
        if replicas_per_device < 1:
            raise ValueError(f"`--replicas-per-device` must be >= 1, got {replicas_per_device!r}")
        self.config = config
        self.stuck_after_s = stuck_after_s
        self.replicas_per_device = replicas_per_device
        self._factory = engine_factory
        self._closed = False
        self._lock = threading.Lock()
        self._retries: list[_Retry] = []
        self.retried = 0
        """Requests sent again after their engine process died before they started denoising."""
        self._wake = threading.Event()
        count = len(devices) * replicas_per_device
        cpu_threads = threads_per_engine or 1
        gpu_threads = threads_per_engine or max(1, (os.cpu_count() or 1) // count)
        self._settings: list[dict[str, Any]] = []
        self._slots: list[_Slot] = []
        for device in devices:
            for _ in range(replicas_per_device):
                index = len(self._slots)
                settings = {
                    "config": dataclasses.replace(config, device=device),
                    "name": f"{index}:{device}",
                    "threads": cpu_threads if device == "cpu" else gpu_threads,
                    "memory_fraction": 0.95 / replicas_per_device if device != "cpu" and replicas_per_device > 1
                    else None,
                }
                self._settings.append(settings)
                self._slots.append(_Slot(index, device, settings["name"], self._start(index)))
        # 1. wait for the first engine: a model that cannot load fails here, as an in-process engine would
        while not any(slot.engine.wait_ready(0.05) for slot in self._slots):
            if all(slot.engine.state in ("dead", "failed") for slot in self._slots):
                errors = "; ".join(f"{slot.name}: {slot.engine.load_error or 'died while loading'}"
                                   for slot in self._slots)
                self.close(drain=False, timeout=1.0)
                raise ValueError(f"no engine process could start: {errors}")
        # from the first ready engine: every engine loads the same models with the same limits
        self.resolver: RequestResolver = next(
            slot.engine.resolver for slot in self._slots if slot.engine.resolver is not None)
        # 2. supervise: restarts, retries waiting for an engine
        self._supervisor = threading.Thread(target=self._supervise, name="baton-router", daemon=True)
        self._supervisor.start()

    # -- state ----------------------------------------------------------------------------------------------------
    @property
    def engines(self) -> list[RemoteEngine]:
        """The engine processes now in the slots (one is replaced when it restarts)."""
        return [slot.engine for slot in self._slots]

    @property
    def ready(self) -> bool:
        return not self._closed and choose_any(self._loads())

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def dead(self) -> bool:
        return False  # its engines are restarted; while open it can always serve again

    @property
    def pending(self) -> int:
        with self._lock:
            waiting = len(self._retries)
        return waiting + sum(slot.engine.pending for slot in self._slots)

    # -- the seam -------------------------------------------------------------------------------------------------
    def resolve(self, request: GenerationRequest | None = None, /, **fields: Any) -> GenerationRequest:
        return self.resolver.resolve(request, **fields)

    def submit(self, request: GenerationRequest, events: RequestEvents | None = None) -> Future[GenerationResult]:
        """Route ``request`` to the least-loaded ready engine holding its model; bad input, a full engine or no
        ready engine raise here."""
        if self._closed:
            raise EngineClosedError("the router is closed")
        request = self.resolver.resolve(request)
        outer: Future[GenerationResult] = Future()
        inner, engine = self._route(request, events)
        self._link(outer, inner, engine, request, events, retried=False)
        return outer

    def cancel(self, future: Future) -> bool:
        return cancel_future(future)  # the outer future's callback cancels the engine's

    def health(self) -> EngineHealth:
        """Stalled only when every ready engine is: one engine moving keeps the router serving."""
        readings = [slot.engine.health() for slot in self._slots if slot.engine.ready]
        stalled = min((reading.stalled_s for reading in readings), default=0.0)
        return EngineHealth(pending=self.pending, stalled_s=stalled, dead=False)

    def stats(self) -> dict[str, Any]:
        engines = [self._slot_stats(slot) for slot in self._slots]
        queued: dict[str, int] = {}
        caches: dict[str, dict[str, int]] = {}
        for each in engines:
            for stage, count in each["queued"].items():
                queued[stage] = queued.get(stage, 0) + count
            for model, cache in each["prompt_cache"].items():
                total = caches.setdefault(model, {"hits": 0, "misses": 0})
                total["hits"] += cache["hits"]
                total["misses"] += cache["misses"]
        with self._lock:
            waiting = len(self._retries)
        denoising = [each["denoising"] for each in engines if each["denoising"] is not None]
        return {
            "pending": waiting + sum(each["pending"] for each in engines),
            "queued_pixel_steps": sum(each["queued_pixel_steps"] for each in engines),
            "queued": queued,
            "denoising": sum(denoising) if denoising else None,
            "prompt_cache": caches,
            "memory": {"device": "host", "bytes": memory_bytes(torch.device("cpu"))},  # the router's own
            "retrying": waiting,
            "retried": self.retried,
            "engines": engines,
        }

    def describe(self) -> dict[str, Any]:
        described = next((slot.engine.describe() for slot in self._slots if slot.engine.ready), {})
        described = {key: value for key, value in described.items() if key not in ("engine", "pid", "device")}
        return {**described, "router": {
            "replicas_per_device": self.replicas_per_device,
            "engines": [{"name": slot.name, "device": slot.device, "pid": slot.engine.pid,
                         "state": self._state(slot), "restarts": slot.restarts} for slot in self._slots],
        }}

    def close(self, drain: bool = True, timeout: float | None = None) -> None:
        """Close every engine process at once (each as :meth:`RemoteEngine.close`); requests waiting for a retry
        fail with :class:`~baton.EngineClosedError`."""
        with self._lock:
            self._closed = True
        self._wake.set()
        supervisor = getattr(self, "_supervisor", None)
        if supervisor is not None and supervisor is not threading.current_thread():
            supervisor.join()  # no restart or retry starts after this; the slots hold their last engines
        with self._lock:
            waiting, self._retries = self._retries, []
        for retry in waiting:
            set_exception(retry.outer, EngineClosedError())
        closers = [threading.Thread(target=slot.engine.close, args=(drain, timeout), daemon=True)
                   for slot in self._slots]
        for closer in closers:
            closer.start()
        for closer in closers:
            closer.join()

    def __enter__(self) -> Router:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- routing --------------------------------------------------------------------------------------------------
    def _loads(self) -> list[EngineLoad]:
        loads = []
        for slot in self._slots:
            engine = slot.engine
            ready = engine.ready
            loads.append(EngineLoad(
                index=slot.index, ready=ready,
                stuck=ready and engine.health().stalled_s >= self.stuck_after_s,
                models=frozenset(engine.resolver.models) if engine.resolver is not None else frozenset(),
                queued_pixel_steps=engine.queued_pixel_steps, pending=engine.pending))
        return loads

    def _route(self, request: GenerationRequest, events: RequestEvents | None) -> tuple[Future, RemoteEngine]:
        index = choose_engine(self._loads(), request.model)
        if index is None:
            raise EngineClosedError("no engine process is ready to take this request (starting, restarting or "
                                    "stuck); retry later")
        engine = self._slots[index].engine
        return engine.submit(request, events), engine  # a full engine raises QueueFullError here

    def _link(self, outer: Future, inner: Future, engine: RemoteEngine, request: GenerationRequest,
              events: RequestEvents | None, retried: bool) -> None:
        def inner_done(settled: Future) -> None:
            if settled.cancelled():  # because the outer one was
                return
            error = settled.exception()
            if error is None:
                set_result(outer, settled.result())
            elif isinstance(error, EngineProcessLostError) and not error.started and not retried:
                self._retry(outer, request, events, str(error))
            else:
                set_exception(outer, error)

        outer.add_done_callback(lambda settled: inner.cancel() if settled.cancelled() else None)
        inner.add_done_callback(inner_done)

    def _retry(self, outer: Future, request: GenerationRequest, events: RequestEvents | None, reason: str) -> None:
        """Send a request again once (its engine died before it started denoising): now if another engine is
        ready, else when one is (a restart), for at most ``RETRY_WAIT_S``."""
        with self._lock:
            closed = self._closed
            if not closed and not outer.done():
                self.retried += 1
                self._retries.append(_Retry(outer, request, events, time.monotonic() + RETRY_WAIT_S, reason))
        if closed:  # close() has drained the retries, or will not see this one
            set_exception(outer, EngineClosedError())
            return
        logger.info("retrying a request whose engine process died before it started denoising")
        self._wake.set()

    def _send_retries(self) -> None:
        with self._lock:
            waiting, self._retries = self._retries, []
        now, still = time.monotonic(), []
        for retry in waiting:
            if retry.outer.done():  # cancelled while it waited
                continue
            try:
                inner, engine = self._route(retry.request, retry.events)
            except EngineClosedError:
                if now < retry.deadline:
                    still.append(retry)
                else:
                    set_exception(retry.outer, EngineProcessLostError(
                        f"{retry.reason}; no engine process could take it within {RETRY_WAIT_S:g} s", started=False))
                continue
            except Exception as exc:  # a full engine: the retry ends with that answer
                set_exception(retry.outer, exc)
                continue
            self._link(retry.outer, inner, engine, retry.request, retry.events, retried=True)
        with self._lock:
            closed = self._closed
            if not closed:
                self._retries = still + self._retries
        for retry in still if closed else ():
            set_exception(retry.outer, EngineClosedError())

    # -- supervision ----------------------------------------------------------------------------------------------
    def _start(self, index: int) -> RemoteEngine:
        settings = self._settings[index]
        return self._factory(settings["config"], name=settings["name"], threads=settings["threads"],
                             memory_fraction=settings["memory_fraction"], on_exit=self._on_exit)

    def _on_exit(self, engine: RemoteEngine) -> None:
        slot = next((slot for slot in self._slots if slot.engine is engine), None)
        if slot is None or self._closed:
            return
        lived = time.monotonic() - (engine.ready_at or engine.started_at)
        if engine.ready_at is not None and lived >= STABLE_AFTER_S:
            slot.quick_deaths, delay = 0, 0.0  # it ran well: a fresh start, at once
        else:  # died loading or soon after: back off, so a crash loop does not spin
            delay = RESTART_BACKOFF_S[min(slot.quick_deaths, len(RESTART_BACKOFF_S) - 1)]
            slot.quick_deaths += 1
        slot.restart_at = time.monotonic() + delay
        logger.warning("engine process %s ended; restarting it in %g s", slot.name, delay)
        self._wake.set()

    def _supervise(self) -> None:
        while not self._closed:
            self._wake.wait(_SUPERVISE_EVERY_S)
            self._wake.clear()
            if self._closed:
                return
            now = time.monotonic()
            for slot in self._slots:
                if slot.restart_at is not None and now >= slot.restart_at:
                    slot.restart_at = None
                    slot.restarts += 1
                    try:
                        slot.engine = self._start(slot.index)
                    except Exception:
                        logger.exception("restarting engine process %s failed", slot.name)
                        slot.restart_at = now + RESTART_BACKOFF_S[-1]
            if self._retries:
                self._send_retries()

    def _state(self, slot: _Slot) -> str:
        engine = slot.engine
        if engine.ready and engine.health().stalled_s >= self.stuck_after_s:
            return "stuck"
        if slot.restart_at is not None:
            return "restarting"
        return engine.state

    def _slot_stats(self, slot: _Slot) -> dict[str, Any]:
        stats = slot.engine.stats()
        return {
            "name": slot.name,
            "device": slot.device,
            "pid": slot.engine.pid,
            "state": self._state(slot),
            "restarts": slot.restarts,
            "stalled_s": round(slot.engine.health().stalled_s, 3),
            **stats,
        }


def choose_any(loads: Sequence[EngineLoad]) -> bool:
    """Whether any engine can take work now (for readiness)."""
    return any(load.ready and not load.stuck for load in loads)

