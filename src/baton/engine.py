"""The engine: the public front that admits requests, and the owner of the models and the workers.

``Engine`` checks each request at the edge, turns it into a :class:`~baton.stages.Job` with a future, and hands it
to an executor: the staged pipeline (``mode="staged"``) or the plain diffusers baseline (``mode="stacked"``). It
never lets a future dangle: on close, every admitted request is finished or failed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import secrets
import sys
import threading
import time
import uuid
from concurrent.futures import Future
from typing import Any

from baton.config import EngineConfig
from baton.device import resolve_device, resolve_dtype
from baton.errors import EngineClosedError, EngineDeadError, QueueFullError
from baton.executors import Executor, StackedExecutor, StagedExecutor
from baton.models import ModelRunner, load_model
from baton.optim import apply_optimizations, check_optimizations
from baton.protocol import EngineHealth, PreviewCallback, ProgressCallback, RequestEvents, cancel_future
from baton.request import DEFAULT_STEPS, GenerationRequest, GenerationResult, pixel_steps
from baton.resolver import ModelSpec, RequestResolver
from baton.stages import Job

logger = logging.getLogger(__name__)

_SEED_RANGE = 2**31  # drawn seeds stay small enough to type back in
DEAD_SHUTDOWN_TIMEOUT_S = 10.0


class Engine:
    """A text-to-image serving engine over one or more diffusers models.

    Example::

        with Engine(models="tiny-sd15") as engine:
            result = engine.generate(prompt="a red fox in the snow", steps=20, seed=0)
            result.images[0].save("fox.png")

    Keyword arguments are :class:`EngineConfig` fields, applied on top of ``config``.
    """

    def __init__(self, config: EngineConfig | None = None, **overrides: Any) -> None:
        config = config or EngineConfig()
        config = dataclasses.replace(config, **overrides) if overrides else config
        self.device = resolve_device(config.device)
        self.dtype = resolve_dtype(config.dtype, self.device)
        check_optimizations(config, self.device)  # refuse what cannot apply here before loading anything
        if config.optimizations.offload != "none" and config.fused_stages is None:
            config = dataclasses.replace(config, fused_stages=True)  # one thread owns the offloaded models
        self.config = config
        self._lock = threading.Lock()
        self._inflight: dict[str, Job] = {}
        self._closed = False
        self._shut_down = False
        self._shut_down_done = threading.Event()
        self._dead: BaseException | None = None
        self._abort = threading.Event()
        self._queued_pixel_steps = 0
        self._busy_since = time.monotonic()

        # 1. load every model and apply the optimizations before any worker starts: a bad name fails here
        self.runners: dict[str, ModelRunner] = {}
        for name in self.config.models:
            runner = load_model(name, self.device, self.dtype)
            if self.config.batch_invariant is not None:
                runner.batch_invariant = self.config.batch_invariant
            runner.optimized = apply_optimizations(runner, self.config, show_progress=sys.stderr.isatty())
            for line in runner.optimized.lines:
                logger.info("%s: %s", name, line)
            self.runners[name] = runner
        self.default_model = self.config.models[0]
        self.max_sizes = {name: self.config.limits.max_size_for(name, runner.default_size, runner.max_size)
                          for name, runner in self.runners.items()}
        """The largest width or height each model takes (``RequestLimits.max_size``)."""
        self.resolver = RequestResolver(self.config.limits, {
            name: _model_spec(name, runner, self.max_sizes[name]) for name, runner in self.runners.items()})
        """Defaults and checks of requests (:meth:`resolve`); plain data, also used by servers and routers."""
        self.max_queued_pixel_steps = self.config.max_queued_pixel_steps or (
            128 * max(runner.default_size for runner in self.runners.values()) ** 2 * DEFAULT_STEPS)

        # 2. start the workers (with a short GIL switch interval: see EngineConfig.gil_switch_interval_s)
        self._holds_switch_interval = False
        if self.config.gil_switch_interval_s is not None:
            _SWITCH_INTERVAL.acquire(self.config.gil_switch_interval_s)
            self._holds_switch_interval = True
        try:
            executor_class = StagedExecutor if self.config.mode == "staged" else StackedExecutor
            self._executor: Executor = executor_class(self.config, self.device, self._abort, self._on_worker_death)
            self._executor.start()
        except BaseException:
            self._release_switch_interval()
            raise
        logger.info(
            "engine ready: mode=%s device=%s dtype=%s models=%s", self.config.mode, self.device, self.dtype,
            list(self.runners),
        )

    # -- submitting -----------------------------------------------------------------------------------------------
    def submit(
        self,
        request: GenerationRequest | None = None,
        /,
        events: RequestEvents | None = None,
        *,
        progress: ProgressCallback | None = None,
        preview: PreviewCallback | None = None,
        preview_every: int = 0,
        **fields: Any,
    ) -> Future[GenerationResult]:
        """Admit a request and return a future of its result.

        Pass a :class:`GenerationRequest`, or its fields as keywords (``prompt=...``, ``steps=...``). Invalid
        requests raise :class:`~baton.InvalidRequestError` here, before any work; a full engine raises
        :class:`~baton.QueueFullError`. Cancelling the future drops the request's remaining work at the next step.
        ``events`` (or, for short, ``progress``, ``preview`` and ``preview_every``): ``progress(steps_done,
        steps_total)`` and, every ``preview_every`` steps, ``preview(steps_done, steps_total, rgb)`` are called
        from the denoising thread (in both modes); they must be quick.
        """
        if events is None:
            events = RequestEvents(progress, preview, preview_every)  # checks preview_every
        elif progress is not None or preview is not None:
            raise ValueError("pass the callbacks in `events` or as keywords, not both")
        # 1. the engine must be able to take it
        if self._dead is not None:
            raise EngineDeadError(f"the engine is dead: {self._dead!r}")
        if self._closed:
            raise EngineClosedError("the engine is closed")
        # 2. resolve the model's defaults, then check everything (before any model work)
        request = self.resolve(request, **fields)
        runner = self.runners[request.model]
        # 3. admission
        future: Future[GenerationResult] = Future()
        job = Job(
            request=request,
            runner=runner,
            future=future,
            request_id=uuid.uuid4().hex,
            seed=request.seed if request.seed is not None else secrets.randbelow(_SEED_RANGE),
            submitted_at=time.perf_counter(),
            progress=events.progress,
            preview=events.preview,
            preview_every=events.preview_every,
            denoising=events.denoising,
            warnings=self.prompt_warnings(request),
        )
        work = pixel_steps(request)
        abandoned = self._executor.abandoned_pixel_steps()  # still on the denoiser, though nobody waits for it
        with self._lock:
            if self._closed:
                raise EngineClosedError("the engine is closed")
            if len(self._inflight) >= self.config.max_queue:
                raise QueueFullError(
                    f"the engine holds {len(self._inflight)} requests, its limit (`max_queue`); retry later"
                )
            held = self._queued_pixel_steps + abandoned
            if held and held + work > self.max_queued_pixel_steps:
                raise QueueFullError(
                    f"the engine holds {held:.3g} pixel-steps of work and this request adds {work:.3g}; the limit "
                    f"is {self.max_queued_pixel_steps:.3g} (`max_queued_pixel_steps`); retry later"
                )
            if not self._inflight:
                self._busy_since = time.monotonic()  # the watchdog's clock starts when work arrives
            self._inflight[job.request_id] = job
            self._queued_pixel_steps += work
        future.add_done_callback(lambda _: self._forget(job.request_id, work))
        # 4. hand it to the workers, never blocking the caller (an event loop, say): a full first queue is a full
        # engine too (cancelled requests can linger there until the stage reaches them)
        if not self._executor.enqueue(job):
            error = QueueFullError("the engine's first stage queue is full (`stage_queue_size`); retry later")
            job.fail(error)
            raise error
        if events.accepted is not None:
            events.accepted(job.warnings)
        return future

    def generate(
        self, request: GenerationRequest | None = None, /, *, timeout: float | None = None, **fields: Any
    ) -> GenerationResult:
        """Generate and wait: :meth:`submit` then the result (or its error)."""
        return self.submit(request, **fields).result(timeout)

    async def generate_async(self, request: GenerationRequest | None = None, /, **fields: Any) -> GenerationResult:
        """``await`` the result; cancelling the awaiting task cancels the request."""
        return await asyncio.wrap_future(self.submit(request, **fields))

    def resolve(self, request: GenerationRequest | None = None, /, **fields: Any) -> GenerationRequest:
        """The request with the model's defaults filled in, validated. Raises on bad input, does no model work."""
        return self.resolver.resolve(request, **fields)

    def cancel(self, future: Future) -> bool:
        """Drop a submitted request's remaining work at its next step (``True`` for the call that did)."""
        return cancel_future(future)

    def prompt_warnings(self, request: GenerationRequest) -> list[str]:
        """A line for each prompt of the resolved ``request`` that is longer than its model's text encoder reads
        (the encoder uses the first tokens and ignores the rest)."""
        runner = self.runners[request.model]
        warnings = []
        for field in ("prompt", "negative_prompt"):
            text = getattr(request, field)
            if text:
                given, read = runner.prompt_tokens(text)
                if given > read:
                    warnings.append(f"`{field}` has {given} tokens; the text encoder read the first {read} and "
                                    "ignored the rest")
        return warnings

    # -- state ----------------------------------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Requests admitted and not yet settled."""
        with self._lock:
            return len(self._inflight)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def ready(self) -> bool:
        """It takes new work: open and alive (an engine is built loaded; there is no loading state)."""
        return not self._closed and self._dead is None

    @property
    def dead(self) -> bool:
        return self._dead is not None

    def health(self) -> EngineHealth:
        """The watchdog's reading (cheap; safe from any thread)."""
        now = time.monotonic()
        with self._lock:
            pending = len(self._inflight)
            busy_since = self._busy_since
        clocks = self._executor.clocks
        # a piece of work that does not end, whether or not anyone still waits for it (a timed-out request's step)
        stalled = max((now - clock.started_at for clock in clocks if clock.started_at is not None), default=0.0)
        if pending:  # and requests that wait while no worker finishes anything
            stalled = max(stalled, now - max(busy_since, *(clock.finished_at for clock in clocks)))
        return EngineHealth(pending=pending, stalled_s=max(0.0, stalled), dead=self.dead)

    def stats(self) -> dict[str, Any]:
        """What is in flight now, per stage (cheap; safe from any thread): for metrics and dashboards."""
        queued = {stage.name: stage.queued for stage in getattr(self._executor, "stages", [])}
        denoiser = getattr(self._executor, "denoiser", None)
        if isinstance(self._executor, StackedExecutor):
            queued = {StackedExecutor.name: self._executor.queued}
        with self._lock:
            pending, work = len(self._inflight), self._queued_pixel_steps
        return {
            "pending": pending,
            "queued_pixel_steps": work,
            "queued": queued,
            "denoising": denoiser.running if denoiser is not None else None,
            "prompt_cache": {name: runner.prompt_cache.stats() for name, runner in self.runners.items()
                             if runner.prompt_cache is not None},
            "memory": {"device": str(self.device), "bytes": memory_bytes(self.device)},
        }

    def describe(self) -> dict[str, Any]:
        """What this engine runs, for ``baton info`` and servers."""
        described: dict[str, Any] = {
            "mode": self.config.mode,
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "models": [{**runner.describe(), "max_size": self.max_sizes[name]}
                       for name, runner in self.runners.items()],
            "max_queue": self.config.max_queue,
            "max_queued_pixel_steps": self.max_queued_pixel_steps,
            "preset": self.config.optimizations.preset,
            "optimizations": dataclasses.asdict(self.config.optimizations),
        }
        if self.config.mode == "staged":
            described["denoise"] = dataclasses.asdict(self.config.denoise)
            described["fused_stages"] = getattr(self._executor, "fused", False)
        return described

    # -- shutting down --------------------------------------------------------------------------------------------
    def close(self, drain: bool = True, timeout: float | None = None) -> None:
        """Stop accepting requests and stop the workers; no admitted request is left pending afterwards.

        Args:
            drain: finish the requests already admitted (``True``), or fail them with
                :class:`~baton.EngineClosedError` at their next step boundary (``False``).
            timeout: seconds to wait for the workers; requests still unfinished then are failed.

        A second call while the first is still closing waits for it (at most ``timeout``), with its promise: a
        caller never returns from ``close`` to find requests still pending.
        """
        with self._lock:
            first = not self._shut_down
            self._closed = self._shut_down = True
        if not first:
            if not drain:
                self._abort.set()  # the first may be draining: stop at the next step boundary instead
            self._shut_down_done.wait(timeout)
            return
        try:
            self._shut_down_now(drain, timeout)
        finally:
            self._shut_down_done.set()

    def _shut_down_now(self, drain: bool, timeout: float | None) -> None:
        if not drain or self._dead is not None:
            self._abort.set()
        if self._dead is not None and timeout is None:
            timeout = DEAD_SHUTDOWN_TIMEOUT_S  # a worker died: the others stop at the abort, or are left behind
        stopped = self._executor.shutdown(timeout)  # also shuts the image-encoding pool down
        if not stopped:
            logger.warning("workers did not stop within %s s; failing what is left", timeout)
            self._abort.set()
        self._fail_all(EngineClosedError())
        self._release_switch_interval()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _forget(self, request_id: str, work: int) -> None:
        with self._lock:
            if self._inflight.pop(request_id, None) is not None:
                self._queued_pixel_steps -= work

    def _fail_all(self, error: BaseException) -> None:
        with self._lock:
            jobs = list(self._inflight.values())
        for job in jobs:
            job.fail(error)

    def _release_switch_interval(self) -> None:
        with self._lock:
            holds, self._holds_switch_interval = self._holds_switch_interval, False
        if holds:
            _SWITCH_INTERVAL.release(self.config.gil_switch_interval_s)

    def _on_worker_death(self, worker: str, exc: BaseException) -> None:
        self._dead = exc
        self._closed = True
        self._abort.set()
        self._fail_all(EngineDeadError(f"worker `{worker}` died: {exc!r}"))
        self._release_switch_interval()


def _model_spec(name: str, runner: ModelRunner, max_size: int) -> ModelSpec:
    schedulers = runner.schedulers
    limited = {sampler: schedulers.max_steps(sampler) for sampler in schedulers.names}
    return ModelSpec(name=name, default_size=runner.default_size, size_multiple=runner.size_multiple,
                     negative_prompt=runner.negative_prompt,
                     default_guidance_scale=runner.default_guidance_scale, max_size=max_size,
                     schedulers=schedulers.names, unsupported_schedulers=dict(schedulers.unsupported),
                     sampler_max_steps={sampler: steps for sampler, steps in limited.items() if steps is not None})


def memory_bytes(device) -> float:
    """Memory in use on ``device``: CUDA, allocated by torch; a CPU, this process's resident set."""
    if device.type == "cuda":
        import torch

        return float(torch.cuda.memory_allocated(device))
    try:
        with open("/proc/self/statm") as statm:  # Linux: resident pages are the second field
            return float(int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE"))
    except OSError:  # no /proc: the peak is the best the standard library offers
        import resource

        return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


class _SwitchIntervalLease:
    """The interpreter's GIL switch interval, shortened while any engine runs and restored after the last.

    It is process-wide, so engines share one lease: while any hold it, the shortest interval any asked for is
    in force; when the last closes, dies or fails to start, the original value comes back."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: list[float] = []
        self._original = sys.getswitchinterval()

    def acquire(self, interval_s: float) -> None:
        with self._lock:
            if not self._held:
                self._original = sys.getswitchinterval()
            self._held.append(interval_s)
            sys.setswitchinterval(min(self._held))

    def release(self, interval_s: float) -> None:
        with self._lock:
            self._held.remove(interval_s)
            sys.setswitchinterval(min(self._held) if self._held else self._original)


_SWITCH_INTERVAL = _SwitchIntervalLease()
