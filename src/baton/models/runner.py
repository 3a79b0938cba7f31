"""The interface every model family implements, so the stages never branch on the family.

A runner wraps one loaded diffusers pipeline and owns what differs between families: encoding prompts (a batch),
preparing one request's denoising (its sampler and timesteps, its initial latents, its conditioning and guidance),
one batched denoiser call, combining guidance and stepping each request's sampler, and decoding latents to pixels.
The denoise stage keeps the scheduling (who joins, who leaves, which key runs) and calls these hooks.

:class:`ModelRunner` holds what every family shares; ``baton.models.unet`` (SD1.5, SDXL and their
guidance-distilled variants) and ``baton.models.transformer`` (SD3, Flux) hold what one kind of denoiser shares,
and each family fills in the rest (``baton.models.families``).

Row layout: a request with ``n`` images and classifier-free guidance contributes ``2n`` denoiser rows,
``[uncond × n, cond × n]``, exactly as the diffusers pipelines order them; without guidance, ``n`` rows.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from diffusers import DiffusionPipeline
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from baton.device import copy_to_device
from baton.models.invariance import RequestSegments, run_rows_separately
from baton.models.noise import draw_noise, step_generator
from baton.models.schedulers import SCHEDULER_CLASSES, SchedulerFactory
from baton.models.types import Conditioning, Denoiser, Optimized, PromptEmbeddings, PromptInput
from baton.request import GenerationRequest

__all__ = ["Conditioning", "Denoising", "ModelRunner", "PromptEmbeddings", "PromptInput"]


@dataclass(slots=True, eq=False)
class Denoising:
    """One request's own denoising, as its runner prepared it and steps it."""

    scheduler: SchedulerMixin  # a private copy: diffusers schedulers keep state
    timesteps: torch.Tensor  # [T] on the CPU: what the scheduler's step() is given (no device reads)
    model_timesteps: torch.Tensor  # [T] on the device, in the form the denoiser takes them
    latents: torch.Tensor  # [n, *runner.latent_shape(height, width)]
    conditioning: Conditioning  # rows: [uncond × n, cond × n] with guidance, else [cond × n]
    guidance_scale: float
    with_guidance: bool  # classifier-free guidance: two branches per image, combined after the forward
    step_kwargs: dict[str, Any]
    index: int = 0

    @property
    def rows(self) -> int:
        return self.conditioning.rows

    @property
    def steps(self) -> int:
        return len(self.timesteps)

    @property
    def finished(self) -> bool:
        return self.index >= len(self.timesteps)


def _drop_truncation_notice(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("The following part of your input was truncated")


class ModelRunner(ABC):
    """One loaded model of one family. Subclasses fill in the family-specific pieces."""

    family: ClassVar[str]
    pipeline_class: ClassVar[type[DiffusionPipeline]]
    denoiser_name: ClassVar[str]
    """The pipeline component that denoises: ``unet`` or ``transformer``."""
    default_guidance_scale: float
    """The family's guidance scale for requests that give none; a model folder's ``baton.json`` may set its own
    (see ``baton.models.registry.SERVING_DEFAULTS_FILE``)."""
    sampler_classes: ClassVar[dict[str, type[SchedulerMixin] | None]] = SCHEDULER_CLASSES
    """The samplers this family can use, by request name (``default``: the model's own)."""
    scheduler_config_fixes: ClassVar[dict[str, object]] = {}
    """Scheduler config values this family's diffusers pipeline forces on any scheduler given to it."""
    latent_rgb_factors: ClassVar[tuple[tuple[float, ...], ...]] = ()
    """A linear map from latent channels to RGB (one row per channel), for cheap previews without the VAE."""
    upcast_vae_in_float16: ClassVar[bool] = False
    """Decode in float32 when the model runs in float16 and its VAE config says ``force_upcast`` (SDXL's VAE
    overflows in float16). diffusers casts the VAE up and back on every call; a serving engine keeps a copy."""
    batch_variant_parents: ClassVar[tuple[str, ...]] = ()
    batch_variant_suffixes: ClassVar[tuple[str, ...]] = ()
    """Where the denoiser's per-sample linears are (top-level module names, and name endings): the layers whose
    result for a row depends on the batch it runs in (``baton.models.invariance``)."""
    tiny_vae: ClassVar[str] = "taesd"
    """The built-in tiny autoencoder whose latents match this family's (``vae: tiny``; baton.optim.vae)."""
    negative_branch: ClassVar[bool] = True
    """Whether guidance runs a second, negative branch per image (classifier-free guidance) at all."""
    joint_attention: ClassVar[bool] = False
    """Whether the denoiser's attention is joint (text and image tokens together, processors of its own)."""
    negative_prompt: ClassVar[str | None] = None
    """Why this family takes no ``negative_prompt`` (it is refused with this reason); ``None``: it takes one."""
    unsupported_variants: ClassVar[dict[str, str]] = {}
    """Pipeline class names of this family's variants that cannot be served, with the reason (see the registry)."""

    def __init__(self, name: str, pipeline: DiffusionPipeline, device: torch.device, dtype: torch.dtype) -> None:
        # the engine reports a cut prompt in the request's answer; diffusers would log it, prompt and all, per request
        logging.getLogger(self.pipeline_class.__module__).addFilter(_drop_truncation_notice)
        self.name = name
        self.pipeline = pipeline
        self.source: str | None = None
        """The folder or hub id the weights came from; ``None`` for a random-weight built-in."""
        self.max_size: int | None = None
        """The largest width or height the model's folder says it serves (``baton.json``); ``None``: the engine's
        default for it, twice its native side."""
        self.example_prompt: str | None = None
        """A prompt the model draws well (``baton.json``), for playgrounds and examples."""
        self._counting_tokenizer = None
        self._counting_lock = threading.Lock()
        self.device = device
        self.dtype = dtype
        self.schedulers = SchedulerFactory(pipeline.scheduler, self.scheduler_config_fixes, device,
                                           self.sampler_classes)
        pipeline.set_progress_bar_config(disable=True)
        vae = pipeline.vae
        if self.upcast_vae_in_float16 and vae.dtype == torch.float16 and getattr(vae.config, "force_upcast", False):
            vae = copy.deepcopy(vae).to(torch.float32)
        self.vae = vae
        self._request_segments = RequestSegments(self.batch_variant_layers())
        self.batch_invariant = device.type == "cpu"
        """Run the batch-variant layers per request (see ``baton.models.invariance``); the engine sets it."""
        for encoder in self.text_encoders():
            if isinstance(getattr(encoder, "text_projection", None), torch.nn.Linear):
                # a pooled projection sees one row per prompt; diffusers encodes one prompt at a time, baton a
                # batch of them (SDXL's second CLIP, both of SD3's)
                run_rows_separately(encoder.text_projection, enabled=lambda: self.batch_invariant)
        self.optimized = Optimized()
        """What ``baton.optim.apply_optimizations`` built for this model; empty: the plain eager model."""
        self._preview_factors: dict[torch.device, torch.Tensor] = {}

    # -- what the optimizations built -----------------------------------------------------------------------------
    @property
    def denoiser(self) -> Denoiser:
        """The denoiser the stages call: eager, or compiled / CUDA-graphed over static shape buckets."""
        return self.optimized.denoiser or self.eager_denoiser

    @denoiser.setter
    def denoiser(self, denoiser: Denoiser) -> None:  # for probes that wrap it (baton.bench.probe)
        self.optimized.denoiser = denoiser

    @property
    def text_device(self) -> torch.device:
        """Where the text encoders run (the CPU when ``prompt_cache.text_encoders_on_cpu``)."""
        return self.optimized.text_device or self.device

    @property
    def prompt_cache(self):
        return self.optimized.prompt_cache

    @property
    def optimizations(self) -> list[str]:
        return self.optimized.lines

    def remove_batch_invariance(self) -> None:
        """Drop the per-request layers for good (compiled and graphed denoisers need one fixed graph)."""
        self._request_segments.remove()
        self.batch_invariant = False

    # -- the model's parts ----------------------------------------------------------------------------------------
    @property
    def denoiser_module(self) -> torch.nn.Module:
        return getattr(self.pipeline, self.denoiser_name)

    def text_encoders(self) -> list[torch.nn.Module]:
        """Every text encoder of the pipeline (SD3 has three, the last a T5), in component order."""
        return [module for name, module in self.pipeline.components.items()
                if name.startswith("text_encoder") and isinstance(module, torch.nn.Module)]

    def batch_variant_layers(self) -> list[torch.nn.Linear]:
        """The denoiser's linears that see one row per sample (M = batch): embedding MLPs, AdaLN projections."""
        return [
            module
            for name, module in self.denoiser_module.named_modules()
            if isinstance(module, torch.nn.Linear)
            and (name.split(".")[0] in self.batch_variant_parents or name.endswith(self.batch_variant_suffixes))
        ]

    # -- shapes ---------------------------------------------------------------------------------------------------
    @property
    def vae_scale_factor(self) -> int:
        """The model's own VAE's (diffusers computes it once, from the VAE it was built with; a replacement VAE
        must match it)."""
        return self.pipeline.vae_scale_factor

    @property
    def latent_channels(self) -> int:
        """Channels of the latents the VAE decodes."""
        return self.pipeline.vae.config.latent_channels

    @property
    @abstractmethod
    def default_size(self) -> int:
        """The model's native resolution (what diffusers uses when no size is given)."""

    @property
    def size_multiple(self) -> int:
        """Widths and heights must be multiples of this (the VAE's factor, times a transformer's patch)."""
        return self.vae_scale_factor

    def latent_shape(self, height: int, width: int) -> tuple[int, ...]:
        """One image's latents as the denoiser takes them (no batch dimension)."""
        return (self.latent_channels, height // self.vae_scale_factor, width // self.vae_scale_factor)

    # -- guidance -------------------------------------------------------------------------------------------------
    def uses_guidance(self, guidance_scale: float) -> bool:
        """Classifier-free guidance (a second, negative branch per image) runs, as in diffusers, for a scale
        above 1, in a family that has the branch at all."""
        return self.negative_branch and guidance_scale > 1.0

    def guidance_condition(self, request: GenerationRequest, rows: int) -> dict[str, torch.Tensor]:
        """Per-row tensors of a guidance-distilled model that embeds the guidance scale; else nothing."""
        return {}

    def request_rows(self, embeddings: PromptEmbeddings, request: GenerationRequest, name: str,
                     negative_name: str) -> torch.Tensor:
        """One of a prompt's tensors as the request's denoiser rows: ``[negative × n, positive × n]`` with
        classifier-free guidance, ``[positive × n]`` without (a new tensor either way, never a broadcast view)."""
        tensors, n = embeddings.tensors, request.num_images
        rows = [tensors[name].expand(n, *tensors[name].shape[1:])]
        if self.uses_guidance(request.guidance_scale):
            rows.insert(0, tensors[negative_name].expand(n, *tensors[negative_name].shape[1:]))
        return torch.cat(rows)

    # -- family-specific ------------------------------------------------------------------------------------------
    @abstractmethod
    def encode_prompts(self, inputs: list[PromptInput]) -> list[PromptEmbeddings]:
        """Encode a batch of prompts (and, where needed, negatives) in one pass on :attr:`text_device`; one
        result per input."""

    @abstractmethod
    def conditioning(self, embeddings: PromptEmbeddings, request: GenerationRequest) -> Conditioning:
        """The denoiser rows of one request (see the module docstring for their order)."""

    @abstractmethod
    def call_denoiser(
        self, module: Any, latents: torch.Tensor, timesteps: torch.Tensor, conditioning: Conditioning
    ) -> torch.Tensor:
        """``module`` (:attr:`denoiser_module`, or it compiled) called as the family's diffusers pipeline calls it."""

    def set_timesteps(self, scheduler: SchedulerMixin, request: GenerationRequest) -> None:
        """The request's schedule, on the host."""
        scheduler.set_timesteps(request.steps, device="cpu")

    def initial_latents(
        self, request: GenerationRequest, generator: torch.Generator, scheduler: SchedulerMixin
    ) -> torch.Tensor:
        """The request's starting noise [n, *latent_shape], drawn exactly as the diffusers pipeline draws it from
        the same seed, and copied to the device without a host sync (``baton.models.noise``)."""
        shape = (request.num_images, self.latent_channels,
                 request.height // self.vae_scale_factor, request.width // self.vae_scale_factor)
        return draw_noise(shape, generator, self.device, self.dtype)

    def model_timesteps(self, timesteps: torch.Tensor) -> torch.Tensor:
        """The schedule's timesteps in the form the denoiser takes them (on the host)."""
        return timesteps

    def scale_model_input(self, scheduler: SchedulerMixin, rows: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        """What the sampler makes of the latents before the denoiser sees them (flow-matching samplers: nothing)."""
        return rows

    def model_output(self, prediction: torch.Tensor) -> torch.Tensor:
        """What the sampler steps on, from the guided prediction (PixArt drops its learned-variance channels)."""
        return prediction

    def unpack(self, latents: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Latents as the denoiser keeps them → [n, C, h, w] as the VAE takes them (Flux packs 2x2 patches)."""
        return latents

    def pipeline_arguments(self, request: GenerationRequest) -> dict[str, Any]:
        """The diffusers pipeline's call arguments for ``request`` (the stacked baseline, the tests' reference)."""
        arguments = dict(
            prompt=request.prompt,
            num_images_per_prompt=request.num_images,
            width=request.width,
            height=request.height,
            num_inference_steps=request.steps,
            guidance_scale=request.guidance_scale,
        )
        if self.negative_prompt is None:
            arguments["negative_prompt"] = request.negative_prompt
        return arguments

    # -- denoising: prepare, one batched forward, each request's step -------------------------------------------
    def start(self, request: GenerationRequest, embeddings: PromptEmbeddings, seed: int) -> Denoising:
        """Prepare ``request``'s denoising: its own sampler and schedule, its initial noise and its conditioning."""
        # 1. a private sampler and its schedule, on the host (the step loop never reads the device)
        scheduler = self.schedulers.new(request.scheduler)
        self.set_timesteps(scheduler, request)
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(0)  # else the first step() searches the timesteps, a device read on CUDA
        timesteps = scheduler.timesteps
        # 2. the initial noise, from the request's own generator as diffusers draws it
        generator = torch.Generator("cpu").manual_seed(seed)
        latents = self.initial_latents(request, generator, scheduler)
        # 3. conditioning and guidance
        return Denoising(
            scheduler=scheduler,
            timesteps=timesteps,
            model_timesteps=copy_to_device(self.model_timesteps(timesteps), self.device),
            latents=latents,
            conditioning=self.conditioning(embeddings, request),
            guidance_scale=float(request.guidance_scale),
            with_guidance=self.uses_guidance(request.guidance_scale),
            step_kwargs=_step_kwargs(scheduler, generator),
        )

    def model_inputs(self, state: Denoising) -> tuple[torch.Tensor, torch.Tensor]:
        """One request's denoiser rows for its current step: (latents [rows, ...], timesteps [rows])."""
        rows = torch.cat([state.latents] * 2) if state.with_guidance else state.latents
        rows = self.scale_model_input(state.scheduler, rows, state.timesteps[state.index])
        return rows, state.model_timesteps[state.index].expand(rows.shape[0])

    def predict(
        self,
        latents: torch.Tensor,  # [rows, ...], each request's from model_inputs
        timesteps: torch.Tensor,  # [rows]
        conditioning: Conditioning,
        request_rows: Sequence[int] = (),
    ) -> torch.Tensor:  # [rows, ...]
        """The denoiser over a batch of rows; ``request_rows`` says how many consecutive rows each request owns,
        so the layers that batching would perturb run per request (``baton.models.invariance``)."""
        with self._request_segments.split(request_rows if self.batch_invariant else ()), self.running("denoiser"):
            return self.denoiser(latents, timesteps, conditioning)

    def step(self, state: Denoising, prediction: torch.Tensor) -> None:
        """Combine ``state``'s guidance branches and take its sampler's step."""
        if state.with_guidance:
            uncond, cond = prediction.chunk(2)
            prediction = uncond + state.guidance_scale * (cond - uncond)
        prediction = self.model_output(prediction)
        t = state.timesteps[state.index]
        state.latents = state.scheduler.step(prediction, t, state.latents, **state.step_kwargs, return_dict=False)[0]
        state.index += 1

    def eager_denoiser(
        self, latents: torch.Tensor, timesteps: torch.Tensor, conditioning: Conditioning
    ) -> torch.Tensor:
        """The denoiser module itself, called as the diffusers pipeline calls it."""
        return self.call_denoiser(self.denoiser_module, latents, timesteps, conditioning)

    # -- shared ---------------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def running(self, component: str) -> Iterator[None]:
        """Around every model call: ``component`` (``text``, ``denoiser`` or ``vae``) on the device when models are
        offloaded, and the denoiser's attention restricted to the chosen SDPA backends (the text encoders and the
        VAE keep PyTorch's choice: they may run elsewhere or in float32, where a kernel like flash has none)."""
        optimized = self.optimized
        if optimized.offload is not None:
            optimized.offload.use(component)
        if optimized.attention_backends is None or component != "denoiser":
            yield
            return
        from torch.nn.attention import sdpa_kernel

        with sdpa_kernel(optimized.attention_backends):
            yield

    def encode(self, inputs: list[PromptInput]) -> list[PromptEmbeddings]:
        """Prompt embeddings on the device in the model's dtype, from the prompt cache where it holds them."""
        if self.prompt_cache is not None:
            return self.prompt_cache.encode(inputs, self._encode_uncached)
        return self._encode_uncached(inputs)

    def _encode_uncached(self, inputs: list[PromptInput]) -> list[PromptEmbeddings]:
        with self.running("text"):
            encoded = self.encode_prompts(inputs)
        for embeddings in encoded:  # no-ops unless the encoders run elsewhere or in another precision
            embeddings.tensors = {
                name: copy_to_device(tensor, self.device, self.dtype) for name, tensor in embeddings.tensors.items()
            }
        return encoded

    def decode(self, latents: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Latents of ``height`` x ``width`` images, as the denoiser keeps them → pixels [B, 3, H, W] in [0, 1], on
        the device."""
        vae = self.vae
        latents = self.unpack(latents, height, width).to(vae.dtype)
        config = vae.config
        if getattr(config, "latents_mean", None) is not None and getattr(config, "latents_std", None) is not None:
            mean = torch.tensor(config.latents_mean).view(1, -1, 1, 1).to(latents.device, latents.dtype)
            std = torch.tensor(config.latents_std).view(1, -1, 1, 1).to(latents.device, latents.dtype)
            latents = latents * std / config.scaling_factor + mean
        else:
            latents = latents / config.scaling_factor
            if getattr(config, "shift_factor", None) is not None:  # SD3's and Flux's VAEs: latents are centred
                latents = latents + config.shift_factor
        with self.running("vae"):
            image = vae.decode(latents, return_dict=False)[0]
        return (image / 2 + 0.5).clamp(0, 1)

    def preview_rgb(self, latents: torch.Tensor, height: int, width: int) -> np.ndarray:
        """Latents → a rough uint8 image [n, h, w, 3] by a linear map (no VAE): the family's published factors,
        else the channels' mean in grey. On CUDA the copy to the host waits for the denoiser's stream: a preview
        costs one synchronization, so ask for few."""
        latents = self.unpack(latents, height, width).float()
        if len(self.latent_rgb_factors) == latents.shape[1]:
            rgb = torch.einsum("nchw,cr->nhwr", latents, self._factors(latents.device))
        else:
            rgb = latents.mean(dim=1, keepdim=True).permute(0, 2, 3, 1).expand(-1, -1, -1, 3)
        return ((rgb.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()

    def _factors(self, device: torch.device) -> torch.Tensor:
        factors = self._preview_factors.get(device)
        if factors is None:
            factors = torch.tensor(self.latent_rgb_factors, dtype=torch.float32, device=device)  # [C, 3]
            self._preview_factors[device] = factors
        return factors

    def prompt_tokens(self, text: str) -> tuple[int, int]:
        """(tokens in ``text``, tokens the longest-reading text encoder reads): it cuts the rest off. Safe from any
        thread: it counts with a copy of the tokenizer (a fast tokenizer changes its own settings on each call, so
        the encoding stage's must not be shared)."""
        with self._counting_lock:
            if self._counting_tokenizer is None:
                self._counting_tokenizer = copy.deepcopy(self.counting_tokenizer())
            tokenizer = self._counting_tokenizer
            special = tokenizer.num_special_tokens_to_add()  # CLIP's start and end tokens take two of its 77
            return len(tokenizer(text, add_special_tokens=False).input_ids), self.token_limit(tokenizer) - special

    def counting_tokenizer(self):
        """The tokenizer of the encoder that reads the most of a prompt."""
        return self.pipeline.tokenizer

    def token_limit(self, tokenizer) -> int:
        return tokenizer.model_max_length

    def describe(self) -> dict[str, Any]:
        parameters = {
            name: sum(p.numel() for p in module.parameters())
            for name, module in self.pipeline.components.items()
            if isinstance(module, torch.nn.Module)
        }
        return {
            "name": self.name,
            "family": self.family,
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "default_size": self.default_size,
            "size_multiple": self.size_multiple,
            "example_prompt": self.example_prompt,
            "schedulers": list(self.schedulers.names),
            "batch_invariant": self.batch_invariant,
            "parameters": parameters,
            "optimizations": list(self.optimizations),
            "warmup_s": self.optimized.warmup_s,
            "prompt_cache": self.prompt_cache.stats() if self.prompt_cache is not None else None,
        }


class ScaledNoiseSampling:
    """For models sampled by the noise-predicting samplers (DDIM, Euler, DPM-Solver, ...): the initial noise is
    scaled by the sampler's ``init_noise_sigma`` and each step's input by its ``scale_model_input``, as their
    pipelines do. The UNets and PixArt-Σ; flow-matching samplers need neither. Put it before ``ModelRunner``."""

    def initial_latents(
        self, request: GenerationRequest, generator: torch.Generator, scheduler: SchedulerMixin
    ) -> torch.Tensor:
        return super().initial_latents(request, generator, scheduler) * scheduler.init_noise_sigma

    def scale_model_input(self, scheduler: SchedulerMixin, rows: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        return scheduler.scale_model_input(rows, timestep)


def _step_kwargs(scheduler: SchedulerMixin, generator: torch.Generator) -> dict[str, Any]:
    """The extra step() arguments the diffusers pipelines pass: eta (DDIM's, 0) and the request's generator,
    wrapped so that the noise a sampler draws from it reaches the device without a sync (``baton.models.noise``)."""
    accepted = inspect.signature(scheduler.step).parameters
    kwargs: dict[str, Any] = {}
    if "eta" in accepted:
        kwargs["eta"] = 0.0
    if "generator" in accepted:
        kwargs["generator"] = step_generator(scheduler, generator)
    return kwargs
