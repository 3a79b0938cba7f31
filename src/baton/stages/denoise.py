"""Denoising with step-level batching: requests join and leave the running batch between denoiser forwards.

Before every forward the worker asks :class:`baton.scheduling.StepPolicy` which waiting requests start and which
key (model, latent size, dtype) runs; the mechanism here carries that out, and the model's runner does what
differs by family (``ModelRunner.start``, ``model_inputs``, ``predict``, ``step``). Each request owns a copy of its
scheduler (diffusers schedulers are stateful), its own step index, step count, guidance scale and sampler, so
requests that differ in these share every forward: timesteps go to the model per row, and guidance is combined
per request. A request whose steps are done leaves at once and goes on to decoding. Nothing in the step loop
reads a device value back to the host. With fused stages (the CPU default) this thread also encodes requests as
it admits them and decodes them as it hands them on.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Hashable
from dataclasses import dataclass, field

import torch

from baton.config import DenoiseConfig
from baton.device import labelled
from baton.errors import EngineClosedError, StageError
from baton.models.runner import Denoising
from baton.models.types import Conditioning
from baton.request import pixel_steps
from baton.scheduling import Running, StepPolicy, Waiting
from baton.stage_names import DENOISE
from baton.stages.base import IDLE_POLL_S, BatchStage, Stage, without_entries
from baton.stages.job import Job

logger = logging.getLogger(__name__)


_serials = itertools.count()


@dataclass(slots=True, eq=False)
class DenoiseState:
    """One running request: its runner-prepared denoising, and its place in the stage's scheduling."""

    job: Job
    key: Hashable
    denoising: Denoising
    arrived_at: float  # at this stage's queue: its key's place in the rotation until the key has run
    images_alongside: int = 0  # images in all the forwards it took part in, its own included
    serial: int = field(default_factory=lambda: next(_serials))  # unlike id(), never reused

    @property
    def rows(self) -> int:
        return self.denoising.rows

    @property
    def finished(self) -> bool:
        return self.denoising.finished


class DenoiseStage(Stage):
    name = DENOISE
    high_priority_stream = True  # the stage every request spends most of its time in: its kernels go first
    config: DenoiseConfig

    def __init__(
        self,
        config: DenoiseConfig,
        *args,
        encoder: BatchStage | None = None,
        decoder: BatchStage | None = None,
        **kwargs,
    ) -> None:
        super().__init__(config, *args, **kwargs)
        # Fused stages (EngineConfig.fused_stages): encode requests as they are admitted and decode them as they
        # finish, on this thread, instead of through the other stages' queues and threads.
        self.encoder = encoder
        self.decoder = decoder
        self.policy = StepPolicy(
            max_rows=config.max_rows,
            max_wait_s=config.max_wait_s,
            join_running=config.batching == "step",
            priority_aging_s=config.priority_aging_s,
        )
        self._running: list[DenoiseState] = []
        self._key_last_ran: dict[Hashable, float] = {}  # when each running key's last forward finished
        # per key: the members its conditioning was built for, and that conditioning (rebuilt when they change)
        self._conditioning: dict[Hashable, tuple[tuple[int, ...], Conditioning]] = {}

    def batch_key(self, job: Job) -> Hashable:
        # What changes the denoiser's input shapes or weights; steps, guidance and sampler may differ freely.
        return (job.runner.name, job.request.height, job.request.width, job.runner.dtype)

    def batch_size(self, job: Job) -> int:
        guided = job.runner.uses_guidance(job.request.guidance_scale)
        return job.request.num_images * (2 if guided else 1)  # denoiser rows

    def abandoned_pixel_steps(self) -> int:
        """The work of requests cancelled (timed out, their client gone) that still run until the next step
        boundary (read from any thread): admission counts it, as the denoiser is still busy with it."""
        return sum(pixel_steps(state.job.request) for state in list(self._running) if state.job.done)

    @property
    def running(self) -> int:
        """Requests denoising now (read from any thread). One cancelled mid-step leaves at the next step boundary,
        but is not counted from the moment it is cancelled, so the count agrees with the engine's ``pending``."""
        return sum(not state.job.done for state in list(self._running))

    def lookahead(self, queue_size: int) -> int:
        # see the whole queue, so priorities and keys are judged over everything waiting here
        return max(queue_size, 4 * self.config.max_rows)

    def run_now(self, jobs: list[Job]) -> None:
        """Denoise ``jobs`` to their last step on the calling thread, each key's requests batched in every forward
        as the worker batches them, then hand them on (for tools that watch the step loop itself, such as
        ``baton.bench.syncs``). Only while the worker thread is not running."""
        now = time.perf_counter()
        for job in jobs:
            job.enter(self.name, now)
        with self.stream.active():  # as the worker: the waits on each job's event are this stream's
            self._admit([Waiting(job, self.batch_key(job), self.batch_size(job), now) for job in jobs])
            while self._running:
                key = self._running[0].key
                self._forward([state for state in self._running if state.key == key])

    # -- the step loop: schedule → execute → update ---------------------------------------------------------------
    def _serve(self) -> None:
        with self.stream.active():
            while True:
                self._pull(block=not self._running and not self._waiting and not self._draining)
                if self._abort.is_set():  # close(drain=False): stop at this step boundary
                    self._fail_everything(EngineClosedError())
                    return
                self._drop_settled()
                if self._draining and not self._running and not self._waiting:
                    return
                decision = self.policy.plan(
                    # a request that joined a running key takes that key's turn: joining never pushes a key back
                    [Running(s, s.key, s.rows, self._key_last_ran.get(s.key, s.arrived_at)) for s in self._running],
                    self._waiting,
                    now=time.perf_counter(),
                    flush=self._draining or len(self._waiting) >= self._lookahead,
                )
                self._admit(decision.admit)
                group = [state for state in self._running if state.key == decision.run_key]
                if group:
                    self._forward(group)
                elif decision.run_key is None and self._waiting:  # idle, holding a partial batch a moment
                    self._pull(block=True, timeout=decision.wait_s or IDLE_POLL_S)

    def _drop_settled(self) -> None:
        """Requests cancelled by their callers leave here, at a step boundary, freeing their rows."""
        self._running = [state for state in self._running if not state.job.done]
        self._waiting = [entry for entry in self._waiting if not entry.item.done]
        running_keys = {state.key for state in self._running}
        for key in [key for key in self._conditioning if key not in running_keys]:
            del self._conditioning[key]  # nothing of this key runs any more: free its concatenated rows
        for key in [key for key in self._key_last_ran if key not in running_keys]:
            del self._key_last_ran[key]

    def _admit(self, entries: list[Waiting[Job]]) -> None:
        if not entries:
            return
        self._waiting = without_entries(self._waiting, entries)
        if self.encoder is not None:
            self._encode_here([entry.item for entry in entries])
        for entry in entries:
            job = entry.item
            if job.done:  # its encoding failed
                continue
            try:
                state = self._start(job, entry.key, entry.arrived_at)
            except Exception as exc:
                logger.exception("denoise could not start request %s", job.request_id)
                job.fail(StageError(self.name, exc))
                continue
            self._running.append(state)

    def _forward(self, group: list[DenoiseState]) -> None:
        """One denoiser forward over ``group``, then each request's own scheduler step; hand on the finished."""
        try:
            with labelled("baton/denoise", self._device), self.clock.working():
                self._step(group, self._group_conditioning(group))
        except Exception as exc:
            logger.exception("denoise failed a forward of %d request(s)", len(group))
            self._running = [state for state in self._running if state not in group]
            for state in group:
                state.job.fail(StageError(self.name, exc))
            return
        now = time.perf_counter()
        self._key_last_ran[group[0].key] = now
        images = sum(state.job.request.num_images for state in group)
        for state in group:
            state.images_alongside += images
        finished = [state for state in group if state.finished and not state.job.done]
        for state in finished:
            self._running.remove(state)
            state.job.records[self.name].batch_images = round(state.images_alongside / state.denoising.index, 2)
            state.job.latents = state.denoising.latents
        if finished:
            self._hand_on_finished([state.job for state in finished])

    def _hand_on_finished(self, jobs: list[Job]) -> None:
        if self.decoder is None:
            for job in jobs:
                self.hand_on(job)
            return
        for job in jobs:
            self.close_record(job)
        self.decoder.run_now(jobs)

    def _encode_here(self, jobs: list[Job]) -> None:
        """Fused stages: encode the prompts of newly admitted requests.

        Timings: in this topology a request waits in one queue, this one, before it is encoded; so that wait is
        reported as text_encode's, and denoise's queue wait starts when its encoding is done."""
        arrived = [job.records[self.name].enqueued for job in jobs]
        self.encoder.run_now(jobs)  # a failure fails only its batch (StageError)
        for job, at in zip(jobs, arrived):
            encode = job.records[self.encoder.name]
            encode.enqueued = at
            if encode.finished is not None:
                job.records[self.name].enqueued = encode.finished.wall

    def _group_conditioning(self, group: list[DenoiseState]) -> Conditioning:
        members = tuple(state.serial for state in group)
        cached = self._conditioning.get(group[0].key)
        if cached is None or cached[0] != members:
            cached = (members, Conditioning.concat([state.denoising.conditioning for state in group]))
            self._conditioning[group[0].key] = cached
        return cached[1]

    def _fail_everything(self, error: BaseException) -> None:
        for job in [state.job for state in self._running] + [entry.item for entry in self._waiting]:
            job.fail(error)
        self._running, self._waiting = [], []
        self._conditioning.clear()

    # -- the model work -------------------------------------------------------------------------------------------
    def _start(self, job: Job, key: Hashable, arrived_at: float) -> DenoiseState:
        job.records[self.name].started = self.stream.mark()
        job.report_denoising()
        self.stream.wait(job.ready, *job.embeddings.tensors.values())
        denoising = job.runner.start(job.request, job.embeddings, job.seed)
        return DenoiseState(job=job, key=key, denoising=denoising, arrived_at=arrived_at)

    def _step(self, group: list[DenoiseState], conditioning: Conditioning) -> None:
        """schedule → execute → update, for one forward: each request's rows, one batched denoiser call, then
        each request's guidance and sampler step (the runner does what differs by family)."""
        runner = group[0].job.runner
        latents, timesteps = zip(*(runner.model_inputs(state.denoising) for state in group))
        rows = [state.rows for state in group]
        prediction = runner.predict(torch.cat(latents), torch.cat(timesteps), conditioning, rows)
        for state, mine in zip(group, prediction.split(rows)):
            denoising = state.denoising
            runner.step(denoising, mine)
            state.job.report_progress(denoising.index, denoising.steps)
            state.job.report_preview(denoising.index, denoising.steps, denoising.latents)
