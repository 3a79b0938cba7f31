"""The worker machinery every stage shares: queue in, decide, run, hand each request on, stop on a sentinel.

A stage owns one thread, one bounded input queue and (on CUDA) one stream. :class:`Stage` is that plumbing;
:class:`BatchStage` adds the loop of the stages that run each request once, in batches decided by
:func:`baton.scheduling.plan_batch`. The denoiser has its own step loop (``baton.stages.denoise``).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Iterator

import torch

from baton.config import DenoiseConfig, StageConfig
from baton.device import StageStream, labelled, set_thread_cpu_threads
from baton.errors import EngineClosedError, StageError
from baton.scheduling import Waiting, plan_batch
from baton.stages.job import Job

logger = logging.getLogger(__name__)

SENTINEL = None
"""Put on a stage's queue after the last request: the stage finishes what it holds, passes it on, and exits."""

IDLE_POLL_S = 0.5  # how often an idle worker wakes to notice an abort


class WorkClock:
    """When a worker last finished a piece of work (a batch, a denoising step) and since when it has been on the
    one it is doing, by ``time.monotonic()``: written by the worker, read by the engine's watchdog from any thread.
    A piece of work that never ends shows here whether or not anyone still waits for its requests."""

    def __init__(self) -> None:
        self.finished_at = time.monotonic()
        self.started_at: float | None = None
        """``None`` while the worker is idle."""

    @contextlib.contextmanager
    def working(self) -> Iterator[None]:
        self.started_at = time.monotonic()
        try:
            yield
        finally:
            self.finished_at = time.monotonic()
            self.started_at = None


class Stage(ABC):
    """A pipeline stage's worker: subclasses say how requests group (:meth:`batch_key`), how much of a batch each
    takes (:meth:`batch_size`), and how the worker serves them (:meth:`_serve`); they call :meth:`hand_on` for
    each request they are done with."""

    name: str
    high_priority_stream: bool = False
    """Whether this stage's CUDA stream gets the device's highest priority (see :class:`StageStream`)."""

    def __init__(
        self,
        config: StageConfig | DenoiseConfig,
        device: torch.device,
        queue_size: int,
        abort: threading.Event,
        on_death: Callable[[str, BaseException], None],
    ) -> None:
        self.config = config
        self.inbox: queue.Queue[Job | None] = queue.Queue(maxsize=queue_size)
        self.stream = StageStream(device, high_priority=self.high_priority_stream)
        self._device = device
        self._cpu_threads = config.cpu_threads if config.cpu_threads is not None else torch.get_num_threads()
        self.next_stage: Stage | None = None
        self._abort = abort
        self._on_death = on_death
        self._waiting: list[Waiting[Job]] = []
        self._draining = False
        self.clock = WorkClock()
        self._lookahead = self.lookahead(queue_size)
        self._thread = threading.Thread(target=self._work, name=f"baton-{self.name}", daemon=True)

    # -- what subclasses define -----------------------------------------------------------------------------------
    def batch_key(self, job: Job) -> Hashable:
        """Requests with equal keys may run in one batch."""
        return job.runner.name

    def batch_size(self, job: Job) -> int:
        """What a request counts towards the batch limit."""
        return job.request.num_images

    @abstractmethod
    def lookahead(self, queue_size: int) -> int:
        """How many queued requests the batching policy sees at once."""

    @abstractmethod
    def _serve(self) -> None:
        """Serve requests (on the stage's thread, under inference mode) until the sentinel has come and everything
        before it is handed on, or the engine aborts."""

    @property
    def queued(self) -> int:
        """Requests waiting here: in the queue, or pulled and not yet started (read from any thread). Cancelled
        ones linger until the stage reaches them, but are not counted."""
        with self.inbox.mutex:  # a consistent snapshot of the queue, as its own methods take it
            queued = [job for job in self.inbox.queue if job is not SENTINEL]
        return sum(not job.done for job in queued) + sum(not entry.item.done for entry in list(self._waiting))

    # -- the plumbing ---------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def put(self, job: Job | None) -> None:
        """Enqueue a request (or the sentinel), waiting while the queue is full (backpressure)."""
        if job is not None:
            job.enter(self.name, time.perf_counter())
        while True:
            try:
                self.inbox.put(job, timeout=IDLE_POLL_S)
                return
            except queue.Full:
                if not self._thread.is_alive():
                    raise EngineClosedError(f"stage `{self.name}` is not running") from None

    def offer(self, job: Job) -> bool:
        """Enqueue ``job`` if there is room now; ``False`` when the queue is full (the caller never waits)."""
        job.enter(self.name, time.perf_counter())
        try:
            self.inbox.put_nowait(job)
        except queue.Full:
            return False
        return True

    def hand_on(self, job: Job) -> None:
        """This stage is done with ``job``: close its record and pass it to the next stage."""
        self.close_record(job)
        if self.next_stage is not None:
            self.next_stage.put(job)

    def close_record(self, job: Job) -> None:
        """Mark ``job`` done here: when (on the host and the stream), and the event its tensors are ready at."""
        job.records[self.name].finished = self.stream.mark()
        job.ready = self.stream.record()

    def _work(self) -> None:
        try:
            if self._device.type == "cpu":
                set_thread_cpu_threads(self._cpu_threads)
            with torch.inference_mode():
                self._serve()
            if self.next_stage is not None:
                try:
                    self.next_stage.put(SENTINEL)
                except EngineClosedError:
                    pass  # the next stage is gone already (its queue full, its thread ended): nothing to tell it
        except BaseException as exc:  # a bug in the mechanism itself: the engine cannot go on
            logger.exception("stage %s died", self.name)
            self._on_death(self.name, exc)

    def _pull(self, block: bool, timeout: float | None = IDLE_POLL_S) -> None:
        """Move queued requests into the waiting list: wait for the first if ``block``, then take what is there."""
        try:
            while len(self._waiting) < self._lookahead and not self._draining:
                job = self.inbox.get(block=block, timeout=timeout if block else None)
                block = False
                if job is SENTINEL:
                    self._draining = True
                else:
                    self._waiting.append(
                        Waiting(
                            job,
                            self.batch_key(job),
                            self.batch_size(job),
                            job.records[self.name].enqueued,
                            job.request.priority,
                        )
                    )
        except queue.Empty:
            pass


class BatchStage(Stage):
    """A stage that runs each request once, in batches: subclasses define :meth:`run_batch`."""

    config: StageConfig

    def __init__(self, config: StageConfig, *args, **kwargs) -> None:
        super().__init__(config, *args, **kwargs)
        self._handed_on: set[int] = set()

    @abstractmethod
    def run_batch(self, jobs: list[Job]) -> None:
        """Do this stage's work for ``jobs`` (runs on the stage's thread and stream, under inference mode)."""

    def lookahead(self, queue_size: int) -> int:
        return 4 * self.config.max_batch_images  # how far down the queue to look for compatible requests

    def hand_on(self, job: Job) -> None:
        self._handed_on.add(id(job))
        super().hand_on(job)

    def _serve(self) -> None:
        while (batch := self._next_batch()) is not None:
            self._execute(batch)

    def run_now(self, jobs: list[Job]) -> None:
        """Run ``jobs`` on the calling thread, skipping this stage's queue (``EngineConfig.fused_stages``), in
        the batches this stage's own policy would form; they are handed on, or failed, as from the queue."""
        now = time.perf_counter()
        for job in jobs:
            job.enter(self.name, now)
        waiting = [Waiting(job, self.batch_key(job), self.batch_size(job), now) for job in jobs]
        while waiting:
            decision = plan_batch(waiting, now, self.config.max_batch_images, max_wait_s=0.0, flush=True)
            waiting = without_entries(waiting, decision.batch)
            self._execute([entry.item for entry in decision.batch])

    def _execute(self, batch: list[Job]) -> None:
        live = []
        for job in batch:
            if job.done:
                continue  # cancelled by its caller while it waited
            if self._abort.is_set():
                job.fail(EngineClosedError())
                continue
            live.append(job)
        if not live:
            return
        images = sum(job.request.num_images for job in live)
        with self.stream.active():
            started = self.stream.mark()
            for job in live:
                job.records[self.name].started = started
                job.records[self.name].batch_images = images
            self._handed_on.clear()
            try:
                with labelled(f"baton/{self.name}", self._device), self.clock.working():
                    self.run_batch(live)
            except Exception as exc:
                logger.exception("stage %s failed a batch of %d request(s)", self.name, len(live))
                for job in live:
                    if id(job) not in self._handed_on:  # those handed on already are in the next stage's hands
                        job.fail(StageError(self.name, exc))

    def _next_batch(self) -> list[Job] | None:
        """Block until a batch is due; ``None`` once the sentinel came and nothing is left."""
        while True:
            self._pull(block=not self._waiting and not self._draining)
            if (self._draining or self._abort.is_set()) and not self._waiting:
                return None  # after an abort, an idle stage stops at once: nothing it could receive will run
            lookahead_full = len(self._waiting) >= self._lookahead  # waiting longer cannot widen the choice
            decision = plan_batch(
                self._waiting,
                now=time.perf_counter(),
                max_size=self.config.max_batch_images,
                max_wait_s=self.config.max_wait_s,
                flush=self._draining or lookahead_full or self._abort.is_set(),
            )
            if decision.batch:
                self._waiting = without_entries(self._waiting, decision.batch)
                return [w.item for w in decision.batch]
            self._pull(block=True, timeout=decision.wait_s if decision.wait_s is not None else IDLE_POLL_S)


def without_entries(waiting: list[Waiting[Job]], taken: list[Waiting[Job]]) -> list[Waiting[Job]]:
    """``waiting`` less the entries in ``taken``, in order."""
    chosen = {id(entry) for entry in taken}
    return [entry for entry in waiting if id(entry) not in chosen]
