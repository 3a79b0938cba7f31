"""Denoising: the scheduler loop, with the denoiser run on the rows of every request in the batch at once.

Each request owns a copy of its scheduler (diffusers schedulers are stateful), its own step count, guidance scale
and sampler, so requests that differ in these still share every denoiser forward: timesteps go to the model per
row, and guidance is combined per request. A request whose steps are done leaves the batch at once and goes on to
decoding while the others continue. Nothing in the step loop reads a device value back to the host.
"""

from __future__ import annotations

import inspect
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import torch
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from baton.errors import EngineClosedError
from baton.models.runner import Conditioning
from baton.stages.base import Stage
from baton.stages.job import Job


@dataclass(slots=True, eq=False)
class DenoiseState:
    """One request's progress through its own scheduler."""

    job: Job
    scheduler: SchedulerMixin
    timesteps: torch.Tensor  # [T] on the CPU: what the scheduler's step() is given (no device reads)
    model_timesteps: torch.Tensor  # [T] on the device: what the denoiser is given
    latents: torch.Tensor  # [n, C, h, w]
    conditioning: Conditioning  # rows: [uncond × n, cond × n] with guidance, else [cond × n]
    guidance_scale: float
    with_guidance: bool
    step_kwargs: dict[str, Any]
    index: int = 0

    @property
    def rows(self) -> int:
        return self.conditioning.rows

    @property
    def finished(self) -> bool:
        return self.index >= len(self.timesteps)


class DenoiseStage(Stage):
    name = "denoise"

    def batch_key(self, job: Job) -> Hashable:
        # What changes the denoiser's input shapes or weights; steps, guidance and sampler may differ freely.
        return (job.runner.name, job.request.height, job.request.width)

    def run_batch(self, jobs: list[Job]) -> None:
        active = [self._start(job) for job in jobs]
        conditioning: Conditioning | None = None
        while active:
            if conditioning is None:  # rebuilt only when the batch's membership changes
                conditioning = Conditioning.concat([state.conditioning for state in active])
            self._step(active, conditioning)
            aborted = self._abort.is_set()
            still = [state for state in active if not (state.finished or state.job.done or aborted)]
            for state in active:
                if state.finished and not state.job.done:
                    state.job.latents = state.latents
                    self.hand_on(state.job)
                elif aborted:  # close(drain=False): stop at this step boundary
                    state.job.fail(EngineClosedError())
            if len(still) != len(active):
                conditioning = None
            active = still

    def _start(self, job: Job) -> DenoiseState:
        request = job.request
        runner = job.runner
        self.stream.wait(job.ready, *job.embeddings.tensors.values())
        scheduler = runner.schedulers.new(request.scheduler)
        scheduler.set_timesteps(request.steps, device="cpu")
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(0)  # else the first step() searches the timesteps, a device read on CUDA
        generator = torch.Generator("cpu").manual_seed(job.seed)
        timesteps = scheduler.timesteps
        model_timesteps = timesteps.to(runner.device, non_blocking=True)
        with_guidance = runner.uses_guidance(request.guidance_scale)
        return DenoiseState(
            job=job,
            scheduler=scheduler,
            timesteps=timesteps,
            model_timesteps=model_timesteps,
            latents=runner.initial_latents(request, generator, scheduler.init_noise_sigma),
            conditioning=runner.conditioning(job.embeddings, request),
            guidance_scale=float(request.guidance_scale),
            with_guidance=with_guidance,
            step_kwargs=_step_kwargs(scheduler, generator),
        )

    def _step(self, active: list[DenoiseState], conditioning: Conditioning) -> None:
        """One denoiser forward over every active request's rows, then each request's own scheduler step."""
        runner = active[0].job.runner
        inputs, timesteps = [], []
        for state in active:
            t = state.timesteps[state.index]
            rows = torch.cat([state.latents] * 2) if state.with_guidance else state.latents
            inputs.append(state.scheduler.scale_model_input(rows, t))
            timesteps.append(state.model_timesteps[state.index].expand(rows.shape[0]))
        noise = runner.predict_noise(torch.cat(inputs), torch.cat(timesteps), conditioning)
        offset = 0
        for state in active:
            prediction = noise[offset : offset + state.rows]
            offset += state.rows
            if state.with_guidance:
                uncond, cond = prediction.chunk(2)
                prediction = uncond + state.guidance_scale * (cond - uncond)
            t = state.timesteps[state.index]
            state.latents = state.scheduler.step(prediction, t, state.latents, **state.step_kwargs, return_dict=False)[0]
            state.index += 1
            state.job.report_progress(state.index, len(state.timesteps))


def _step_kwargs(scheduler: SchedulerMixin, generator: torch.Generator) -> dict[str, Any]:
    """The extra step() arguments the diffusers pipelines pass: eta (DDIM's, 0) and the request's generator."""
    accepted = inspect.signature(scheduler.step).parameters
    kwargs: dict[str, Any] = {}
    if "eta" in accepted:
        kwargs["eta"] = 0.0
    if "generator" in accepted:
        kwargs["generator"] = generator
    return kwargs
