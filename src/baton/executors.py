"""The two ways an engine runs admitted requests: baton's staged pipeline, and the stacked diffusers baseline."""

from __future__ import annotations

import inspect
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Protocol

import torch
from diffusers import DiffusionPipeline

from baton.config import EngineConfig, StageConfig
from baton.device import Mark, set_thread_cpu_threads
from baton.errors import EngineClosedError, StageError
from baton.models.builtin import quiet_casts
from baton.models.runner import ModelRunner
from baton.request import GenerationRequest, pixel_steps
from baton.stage_names import IMAGE_ENCODE, PIPELINE
from baton.stages import SENTINEL, DenoiseStage, ImageEncodeStage, Job, Stage, TextEncodeStage, VaeDecodeStage
from baton.stages.base import WorkClock
from baton.stages.image_encode import build_result, complete, to_host_pixels

logger = logging.getLogger(__name__)

DeathHandler = Callable[[str, BaseException], None]


class Executor(Protocol):
    def start(self) -> None: ...

    def enqueue(self, job: Job) -> bool:
        """Hand ``job`` to the workers without waiting; ``False`` when the first queue is full."""
        ...

    def shutdown(self, timeout: float | None) -> bool:
        """Stop after the requests already enqueued; ``True`` when every worker has exited in time."""
        ...

    @property
    def clocks(self) -> list[WorkClock]:
        """Each worker's :class:`WorkClock`, for the watchdog."""
        ...

    def abandoned_pixel_steps(self) -> int:
        """Work still running for requests whose callers gave up on them (it ends at the next step boundary)."""
        ...


class StagedExecutor:
    """The stages on their own threads, linked by bounded queues: encode → denoise → decode → image encode.

    With ``EngineConfig.fused_stages`` (the default on a CPU) text encoding and VAE decoding run on the denoiser's
    thread instead, as requests are admitted and as they finish: denoise → image encode.
    """

    def __init__(self, config: EngineConfig, device: torch.device, abort: threading.Event, on_death: DeathHandler):
        common = dict(device=device, queue_size=config.stage_queue_size, abort=abort, on_death=on_death)
        self.image_stage = ImageEncodeStage(StageConfig(cpu_threads=1), workers=config.image_workers, **common)
        encoder = TextEncodeStage(config.encode, **common)
        decoder = VaeDecodeStage(config.decode, **common)
        fused = config.fused_stages if config.fused_stages is not None else device.type == "cpu"
        self.fused = fused
        self._all_stages = [encoder, decoder, self.image_stage]  # fused ones run on the denoiser's thread
        if fused:
            self.denoiser = DenoiseStage(config.denoise, encoder=encoder, decoder=decoder, **common)
            decoder.next_stage = self.image_stage  # the encoder hands nothing on: the denoiser called it
            self.stages: list[Stage] = [self.denoiser, self.image_stage]
        else:
            self.denoiser = DenoiseStage(config.denoise, **common)
            self.stages = [encoder, self.denoiser, decoder, self.image_stage]
        for upstream, downstream in zip(self.stages, self.stages[1:]):
            upstream.next_stage = downstream

    def start(self) -> None:
        for stage in self.stages:
            stage.start()

    def enqueue(self, job: Job) -> bool:
        return self.stages[0].offer(job)

    @property
    def clocks(self) -> list[WorkClock]:
        return [stage.clock for stage in (*self._all_stages, self.denoiser)]

    def abandoned_pixel_steps(self) -> int:
        return self.denoiser.abandoned_pixel_steps()

    def shutdown(self, timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            self.stages[0].put(SENTINEL)  # each stage passes it on once it has handed on all it holds
        except EngineClosedError:
            pass  # the first stage is gone already (engine death); the rest are joined below
        finished = all(stage.join(_remaining(deadline)) for stage in self.stages)
        self.image_stage.shutdown()
        return finished


class PipelineInterrupted(Exception):
    """Raised from a stacked pipeline's step callback to stop a request nobody waits for any more."""


def stacked_pipeline(runner: ModelRunner, scheduler: str) -> DiffusionPipeline:
    """A plain diffusers pipeline sharing ``runner``'s modules, with its own copy of sampler ``scheduler``."""
    # from_pipe casts every module to its `dtype` (float32 when not given), and these modules are shared with the
    # staged path: pass ours so the cast is a no-op, and mute its warning about casting.
    with quiet_casts():
        # the VAE is passed on explicitly: from_pipe drops a tiny autoencoder, whose class it does not expect
        pipe = runner.pipeline_class.from_pipe(
            runner.pipeline, scheduler=runner.schedulers.new(scheduler), vae=runner.pipeline.vae, dtype=runner.dtype
        )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_stacked(
    pipe: DiffusionPipeline,
    runner: ModelRunner,
    request: GenerationRequest,
    generator: torch.Generator,
    on_step: Callable[[int, int, torch.Tensor], bool] | None = None,
) -> torch.Tensor:
    """The plain diffusers pipeline call for one request: pixels [n, 3, H, W] in [0, 1].

    ``on_step(steps_done, steps_total, latents)`` runs after each step (diffusers' ``callback_on_step_end``);
    returning ``True`` interrupts the remaining steps."""
    # (no `runner.running()` here: the options it serves, model offload and attention kernels, are staged-only)
    callbacks = {}
    if on_step is not None:
        if "callback_on_step_end" in inspect.signature(pipe.__call__).parameters:

            def on_step_end(pipe, step: int, timestep, tensors: dict) -> dict:
                if on_step(step + 1, pipe.num_timesteps, tensors["latents"]):
                    # not diffusers' `_interrupt`, which skips the steps but still decodes for nobody
                    raise PipelineInterrupted
                return tensors

            callbacks = {"callback_on_step_end": on_step_end}
        else:  # the older per-step callback (PixArt's pipelines)

            def callback(step: int, timestep, latents: torch.Tensor) -> None:
                if on_step(step + 1, len(pipe.scheduler.timesteps), latents):
                    raise PipelineInterrupted

            callbacks = {"callback": callback, "callback_steps": 1}

    return pipe(**runner.pipeline_arguments(request), generator=generator, output_type="pt", **callbacks).images


class StackedExecutor:
    """The baseline: one worker thread that calls the plain diffusers pipeline for each request in turn."""

    name = PIPELINE

    def __init__(self, config: EngineConfig, device: torch.device, abort: threading.Event, on_death: DeathHandler):
        self._inbox: queue.Queue[Job | None] = queue.Queue(maxsize=config.max_queue + 1)
        self._abort = abort
        self._on_death = on_death
        self._device = device
        self._cpu_threads = torch.get_num_threads()  # the whole pipeline on one thread, with every core
        self._clock = WorkClock()
        self._current: Job | None = None
        self._pipelines: dict[tuple[str, str], DiffusionPipeline] = {}  # (model, sampler) -> its pipeline
        self._thread = threading.Thread(target=self._work, name="baton-stacked", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def queued(self) -> int:
        return self._inbox.qsize()

    @property
    def clocks(self) -> list[WorkClock]:
        return [self._clock]

    def abandoned_pixel_steps(self) -> int:
        job = self._current
        return pixel_steps(job.request) if job is not None and job.done else 0

    def enqueue(self, job: Job) -> bool:
        job.enter(self.name, time.perf_counter())
        try:
            self._inbox.put_nowait(job)
        except queue.Full:
            return False
        return True

    def shutdown(self, timeout: float | None) -> bool:
        self._inbox.put(SENTINEL)
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _work(self) -> None:
        try:
            if self._device.type == "cpu":
                set_thread_cpu_threads(self._cpu_threads)
            while (job := self._inbox.get()) is not SENTINEL:
                self._run(job)
        except BaseException as exc:
            logger.exception("the stacked worker died")
            self._on_death(self.name, exc)

    def _run(self, job: Job) -> None:
        self._current = job
        try:
            with self._clock.working():
                self._run_pipeline(job)
        finally:
            self._current = None

    def _run_pipeline(self, job: Job) -> None:
        if job.done:
            return
        if self._abort.is_set():
            job.fail(EngineClosedError())
            return
        record = job.records[self.name]
        record.started = Mark(time.perf_counter())
        record.batch_images = job.request.num_images
        job.report_denoising()
        try:
            generator = torch.Generator("cpu").manual_seed(job.seed)

            def on_step(done: int, total: int, latents: torch.Tensor) -> bool:
                self._clock.finished_at = self._clock.started_at = time.monotonic()  # a step done, the next begun
                job.report_progress(done, total)
                job.report_preview(done, total, latents)
                return job.done or self._abort.is_set()  # cancelled, timed out or closing: stop stepping

            key = (job.runner.name, job.request.scheduler)
            if key not in self._pipelines:
                self._pipelines[key] = stacked_pipeline(job.runner, job.request.scheduler)
            try:
                pixels = run_stacked(self._pipelines[key], job.runner, job.request, generator, on_step)
            except PipelineInterrupted:  # cancelled, timed out, or the engine is closing without draining
                job.fail(EngineClosedError())  # a no-op when the caller already cancelled it
                return
            pixels = to_host_pixels(pixels, job.request.output_format)
            record.finished = Mark(time.perf_counter())
            job.enter(IMAGE_ENCODE, record.finished.wall)
            encode_record = job.records[IMAGE_ENCODE]
            encode_record.started, encode_record.batch_images = record.finished, job.request.num_images
            result = build_result(job, pixels)
            encode_record.finished = Mark(time.perf_counter())
        except Exception as exc:
            logger.exception("the diffusers pipeline failed request %s", job.request_id)
            job.fail(StageError(self.name, exc))
            return
        complete(job, result)


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())
