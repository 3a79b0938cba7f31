"""The interface every model family implements, so the engine never branches on the family.

A runner wraps one loaded diffusers pipeline and offers the pieces the stages call: encode prompts (a batch),
build one request's denoiser conditioning, predict noise for a batch of rows, and decode latents to pixels.
It also runs the whole plain pipeline for the stacked baseline.

Row layout: a request with ``n`` images and classifier-free guidance contributes ``2n`` denoiser rows,
``[uncond × n, cond × n]``, exactly as the diffusers pipelines order them; without guidance, ``n`` rows.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from diffusers import DiffusionPipeline

from baton.device import copy_to_device
from baton.models.builtin import quiet_casts
from baton.models.invariance import RequestSegments, batch_variant_layers
from baton.models.noise import draw_noise
from baton.models.schedulers import SchedulerFactory
from baton.request import GenerationRequest


class PipelineInterrupted(Exception):
    """Raised from a stacked pipeline's step callback to stop a request nobody waits for any more."""


if TYPE_CHECKING:  # the optimizations import this module; the runner only holds what they build
    from baton.optim.memory import ModelOffload
    from baton.optim.prompt_cache import PromptCache

Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]], torch.Tensor]
"""(latents [rows, C, h, w], timesteps [rows], hidden states [rows, seq, D], added conditions) → noise."""

TIMESTEP_COND = "timestep_cond"
"""The key, among a Conditioning's added tensors, of a guidance-distilled UNet's embedded guidance scale
([rows, time_cond_proj_dim]). It travels with the other per-row conditions (batched, padded to a shape bucket,
copied into a CUDA graph's buffers alike) and goes to the UNet as its ``timestep_cond`` argument."""


def call_unet(
    unet: Callable[..., Any], latents: torch.Tensor, timesteps: torch.Tensor, hidden: torch.Tensor,
    added: dict[str, torch.Tensor],
) -> torch.Tensor:
    """``unet`` (the module, or it compiled) called as the diffusers pipelines call it: :data:`TIMESTEP_COND` as
    its ``timestep_cond``, the other added conditions as ``added_cond_kwargs``."""
    timestep_cond = added.get(TIMESTEP_COND)
    if timestep_cond is not None:
        added = {name: tensor for name, tensor in added.items() if name != TIMESTEP_COND}
    return unet(
        latents, timesteps, encoder_hidden_states=hidden, timestep_cond=timestep_cond,
        added_cond_kwargs=added or None, return_dict=False,
    )[0]


@dataclass(slots=True)
class PromptEmbeddings:
    """Text conditioning of one prompt: one row per tensor, not yet repeated per image."""

    tensors: dict[str, torch.Tensor]  # family-specific names, each [1, ...]; e.g. "prompt": [1, 77, D]


@dataclass(slots=True)
class Conditioning:
    """Denoiser inputs besides latents and timesteps, one row per denoiser sample."""

    hidden_states: torch.Tensor  # [rows, seq, D]
    added: dict[str, torch.Tensor] = field(default_factory=dict)  # each [rows, ...]; SDXL: text_embeds, time_ids;
    # guidance-distilled UNets: TIMESTEP_COND

    @property
    def rows(self) -> int:
        return self.hidden_states.shape[0]

    @staticmethod
    def concat(parts: list[Conditioning]) -> Conditioning:
        if len(parts) == 1:
            return parts[0]
        return Conditioning(
            hidden_states=torch.cat([p.hidden_states for p in parts]),
            added={key: torch.cat([p.added[key] for p in parts]) for key in parts[0].added},
        )


@dataclass(frozen=True, slots=True)
class PromptInput:
    """What the text encoder needs of one request."""

    prompt: str
    negative_prompt: str | None
    needs_negative: bool


def _drop_truncation_notice(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("The following part of your input was truncated")


class ModelRunner(ABC):
    """One loaded model of one family. Subclasses fill in the family-specific pieces."""

    family: ClassVar[str]
    pipeline_class: ClassVar[type[DiffusionPipeline]]
    default_guidance_scale: float
    """The family's guidance scale for requests that give none; a model folder's ``baton.json`` may set its own
    (see ``baton.models.registry.SERVING_DEFAULTS_FILE``)."""
    scheduler_config_fixes: ClassVar[dict[str, object]] = {}
    """Scheduler config values this family's diffusers pipeline forces on any scheduler given to it."""
    latent_rgb_factors: ClassVar[tuple[tuple[float, float, float], ...]] = ()
    """A linear map from latent channels to RGB (one row per channel), for cheap previews without the VAE."""
    upcast_vae_in_float16: ClassVar[bool] = False
    """Decode in float32 when the model runs in float16 and its VAE config says ``force_upcast`` (SDXL's VAE
    overflows in float16). diffusers casts the VAE up and back on every call; a serving engine keeps a copy."""

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
        self.schedulers = SchedulerFactory(pipeline.scheduler, self.scheduler_config_fixes, device)
        self._stacked_pipelines: dict[str, DiffusionPipeline] = {}
        pipeline.set_progress_bar_config(disable=True)
        vae = pipeline.vae
        if self.upcast_vae_in_float16 and vae.dtype == torch.float16 and getattr(vae.config, "force_upcast", False):
            vae = copy.deepcopy(vae).to(torch.float32)
        self.vae = vae
        self._request_segments = RequestSegments(batch_variant_layers(pipeline.unet))
        self.batch_invariant = device.type == "cpu"
        """Run the batch-variant layers per request (see ``baton.models.invariance``); the engine sets it."""

        # What ``baton.optim.apply_optimizations`` may change; the defaults are the plain eager models.
        self.denoiser: Denoiser = self.eager_denoiser
        """The denoiser the stages call: eager, or compiled / CUDA-graphed over static shape buckets."""
        self.text_device = device
        """Where the text encoders run (the CPU when ``prompt_cache.text_encoders_on_cpu``)."""
        self.prompt_cache: PromptCache | None = None
        self.offload: ModelOffload | None = None
        self.attention_backends: list | None = None
        """SDPA backends the model calls are restricted to (``torch.nn.attention.sdpa_kernel``); None: any."""
        self.optimizations: list[str] = []
        """What was applied, one line each, for logs and ``describe()``."""
        self.warmup_s: float | None = None
        self._preview_factors: dict[torch.device, torch.Tensor] = {}

    def remove_batch_invariance(self) -> None:
        """Drop the per-request layers for good (compiled and graphed denoisers need one fixed graph)."""
        self._request_segments.remove()
        self.batch_invariant = False

    # -- shapes ---------------------------------------------------------------------------------------------------
    @property
    def vae_scale_factor(self) -> int:
        """The model's own VAE's (diffusers computes it once, from the VAE it was built with; a replacement VAE
        must match it)."""
        return self.pipeline.vae_scale_factor

    @property
    def latent_channels(self) -> int:
        return self.pipeline.unet.config.in_channels

    @property
    def default_size(self) -> int:
        """The model's native resolution (what diffusers uses when no size is given)."""
        sample_size = self.pipeline.unet.config.sample_size
        return (sample_size[0] if isinstance(sample_size, (list, tuple)) else sample_size) * self.vae_scale_factor

    @property
    def embeds_guidance(self) -> bool:
        """A guidance-distilled UNet (LCM-distilled SD1.5 and SDXL): it takes the guidance scale as an embedding
        (``timestep_cond``), and classifier-free guidance is off, as diffusers' pipelines do for it."""
        return getattr(self.pipeline.unet.config, "time_cond_proj_dim", None) is not None

    def uses_guidance(self, guidance_scale: float) -> bool:
        """Classifier-free guidance runs, as in diffusers, only for a scale above 1 and a UNet that does not
        embed the scale itself."""
        return guidance_scale > 1.0 and not self.embeds_guidance

    def guidance_condition(self, request: GenerationRequest, rows: int) -> dict[str, torch.Tensor]:
        """The embedded guidance scale of a guidance-distilled UNet, one row per denoiser row (else nothing).

        Per row, so requests with different scales share a forward. diffusers embeds ``guidance_scale - 1`` in
        float32 and casts it to the latents' dtype; so does this, on the host, and copies it without a sync."""
        if not self.embeds_guidance:
            return {}
        scale = torch.tensor([request.guidance_scale - 1])
        embedding = self.pipeline.get_guidance_scale_embedding(
            scale, embedding_dim=self.pipeline.unet.config.time_cond_proj_dim
        )  # [1, time_cond_proj_dim], float32, on the host
        return {TIMESTEP_COND: copy_to_device(embedding, self.device, self.dtype).expand(rows, -1)}

    # -- family-specific ------------------------------------------------------------------------------------------
    @abstractmethod
    def encode_prompts(self, inputs: list[PromptInput]) -> list[PromptEmbeddings]:
        """Encode a batch of prompts (and, where needed, negatives) in one pass on :attr:`text_device`; one
        result per input."""

    @abstractmethod
    def conditioning(self, embeddings: PromptEmbeddings, request: GenerationRequest) -> Conditioning:
        """The denoiser rows of one request (see the module docstring for their order)."""

    # -- shared ---------------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def running(self, component: str) -> Iterator[None]:
        """Around every model call: ``component`` (``text``, ``denoiser`` or ``vae``) on the device when models are
        offloaded, and the denoiser's attention restricted to the chosen SDPA backends (the text encoders and the
        VAE keep PyTorch's choice: they may run elsewhere or in float32, where a kernel like flash has none)."""
        if self.offload is not None:
            self.offload.use(component)
        if self.attention_backends is None or component != "denoiser":
            yield
            return
        from torch.nn.attention import sdpa_kernel

        with sdpa_kernel(self.attention_backends):
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

    def initial_latents(self, request: GenerationRequest, generator: torch.Generator, init_noise_sigma: Any):
        """The request's starting noise, drawn exactly as the diffusers pipeline draws it from the same seed, and
        copied to the device without a host sync (``baton.models.noise``)."""
        shape = (
            request.num_images,
            self.latent_channels,
            request.height // self.vae_scale_factor,
            request.width // self.vae_scale_factor,
        )
        latents = draw_noise(shape, generator, self.device, self.dtype)
        return latents * init_noise_sigma  # [n, C, H/8, W/8]

    def predict_noise(
        self,
        latents: torch.Tensor,  # [rows, C, h, w], already scaled by each request's scheduler
        timesteps: torch.Tensor,  # [rows]
        conditioning: Conditioning,
        request_rows: Sequence[int] = (),
    ) -> torch.Tensor:  # [rows, C, h, w]
        """The denoiser over a batch of rows; ``request_rows`` says how many consecutive rows each request owns,
        so the layers that batching would perturb run per request (``baton.models.invariance``)."""
        with self._request_segments.split(request_rows if self.batch_invariant else ()), self.running("denoiser"):
            return self.denoiser(latents, timesteps, conditioning.hidden_states, conditioning.added)

    def eager_denoiser(
        self, latents: torch.Tensor, timesteps: torch.Tensor, hidden: torch.Tensor, added: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """The UNet itself, called as the diffusers pipelines call it."""
        return call_unet(self.pipeline.unet, latents, timesteps, hidden, added)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents [B, C, h, w] → pixels [B, 3, H, W] in [0, 1], on the device."""
        vae = self.vae
        latents = latents.to(vae.dtype)
        config = vae.config
        if getattr(config, "latents_mean", None) is not None and getattr(config, "latents_std", None) is not None:
            mean = torch.tensor(config.latents_mean).view(1, -1, 1, 1).to(latents.device, latents.dtype)
            std = torch.tensor(config.latents_std).view(1, -1, 1, 1).to(latents.device, latents.dtype)
            latents = latents * std / config.scaling_factor + mean
        else:
            latents = latents / config.scaling_factor
        with self.running("vae"):
            image = vae.decode(latents, return_dict=False)[0]
        return (image / 2 + 0.5).clamp(0, 1)

    def preview_rgb(self, latents: torch.Tensor) -> np.ndarray:
        """Latents [n, C, h, w] → a rough uint8 image [n, h, w, 3] by a linear map (no VAE). On CUDA the copy to
        the host waits for the denoiser's stream: a preview costs one synchronization, so ask for few."""
        rgb = torch.einsum("nchw,cr->nhwr", latents.float(), self._factors(latents.device))
        return ((rgb.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()

    def run_pipeline(
        self,
        request: GenerationRequest,
        generator: torch.Generator,
        on_step: Callable[[int, int, torch.Tensor], bool] | None = None,
    ) -> torch.Tensor:
        """The plain diffusers pipeline call for one request (the stacked baseline): pixels [n, 3, H, W] in [0, 1].

        ``on_step(steps_done, steps_total, latents)`` runs after each step (diffusers' ``callback_on_step_end``);
        returning ``True`` interrupts the remaining steps."""
        pipe = self._stacked_pipelines.get(request.scheduler)
        if pipe is None:
            pipe = self.pipeline_with_scheduler(request.scheduler)
            self._stacked_pipelines[request.scheduler] = pipe
        # (no `running()` here: the options it serves, model offload and attention kernels, are staged-only)
        callback = None
        if on_step is not None:

            def callback(pipe, step: int, timestep, tensors: dict) -> dict:
                if on_step(step + 1, pipe.num_timesteps, tensors["latents"]):
                    # not diffusers' `_interrupt`, which skips the steps but still decodes for nobody
                    raise PipelineInterrupted
                return tensors

        return pipe(
            prompt=request.prompt,
            negative_prompt=request.negative_prompt,
            num_images_per_prompt=request.num_images,
            width=request.width,
            height=request.height,
            num_inference_steps=request.steps,
            guidance_scale=request.guidance_scale,
            generator=generator,
            output_type="pt",
            callback_on_step_end=callback,
        ).images

    def _factors(self, device: torch.device) -> torch.Tensor:
        factors = self._preview_factors.get(device)
        if factors is None:
            factors = torch.tensor(self.latent_rgb_factors, dtype=torch.float32, device=device)  # [C, 3]
            self._preview_factors[device] = factors
        return factors

    def pipeline_with_scheduler(self, scheduler: str) -> DiffusionPipeline:
        """A plain diffusers pipeline sharing this runner's modules, with its own ``scheduler`` copy."""
        # from_pipe casts every module to its `dtype` (float32 when not given), and these modules are
        # shared with the staged path: pass ours so the cast is a no-op, and mute its warning about casting.
        with quiet_casts():
            # the VAE is passed on explicitly: from_pipe drops a tiny autoencoder, whose class it does not expect
            pipe = self.pipeline_class.from_pipe(
                self.pipeline, scheduler=self.schedulers.new(scheduler), vae=self.pipeline.vae, dtype=self.dtype
            )
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def prompt_tokens(self, text: str) -> tuple[int, int]:
        """(tokens in ``text``, tokens the text encoder reads): the encoder cuts the rest off. Safe from any thread:
        it counts with a copy of the tokenizer (a fast tokenizer changes its own settings on each call, so the
        encoding stage's must not be shared)."""
        with self._counting_lock:
            if self._counting_tokenizer is None:
                self._counting_tokenizer = copy.deepcopy(self.pipeline.tokenizer)
            tokenizer = self._counting_tokenizer
            special = tokenizer.num_special_tokens_to_add()  # CLIP's start and end tokens take two of its 77
            return len(tokenizer(text, add_special_tokens=False).input_ids), tokenizer.model_max_length - special

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
            "example_prompt": self.example_prompt,
            "schedulers": list(self.schedulers.names),
            "batch_invariant": self.batch_invariant,
            "parameters": parameters,
            "optimizations": list(self.optimizations),
            "warmup_s": self.warmup_s,
            "prompt_cache": self.prompt_cache.stats() if self.prompt_cache is not None else None,
        }
