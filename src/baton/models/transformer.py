"""What the diffusion-transformer families (SD3, Flux) share: flow matching, a T5 text encoder, patched latents.

Their samplers integrate a velocity from pure noise (sigma 1) to the image (sigma 0): no ``init_noise_sigma``, no
``scale_model_input``. The schedule's shift may depend on the image size (``use_dynamic_shifting``): diffusers
computes ``mu`` from the number of image tokens, and so does this, per request; requests of one batch key share a
size, hence a ``mu``. Their per-sample linears are the timestep/pooled-text embedders and every block's AdaLN
projections, which see one row per sample.
"""

from __future__ import annotations

import inspect
from typing import ClassVar

import numpy as np
from diffusers.pipelines.flux.pipeline_flux import calculate_shift
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from baton.models.runner import ModelRunner
from baton.models.schedulers import FLOW_MATCH_SCHEDULER_CLASSES
from baton.request import GenerationRequest


class TransformerRunner(ModelRunner):
    denoiser_name = "transformer"
    joint_attention = True
    sampler_classes = FLOW_MATCH_SCHEDULER_CLASSES
    batch_variant_parents = ("time_text_embed",)  # timestep, pooled-text (and Flux-dev's guidance) embedders
    batch_variant_suffixes = ("norm1.linear", "norm1_context.linear", "norm.linear", "norm_out.linear")  # AdaLN
    max_sequence_length: ClassVar[int]
    """T5 tokens the family's pipeline encodes by default (its ``max_sequence_length``)."""
    t5_tokenizer: ClassVar[str]
    """The pipeline component holding the T5 tokenizer: the encoder that reads the most of a prompt."""
    default_max_shift: ClassVar[float]
    """``max_shift`` when the scheduler config has none (the family's pipeline's own default)."""
    patch: ClassVar[int] = 2
    """Latent pixels per token along each side (SD3's patch size, Flux's 2x2 packing)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.pipeline.scheduler.config.get("use_dynamic_shifting", False):
            for name, cls in self.sampler_classes.items():
                if cls is not None and "mu" not in inspect.signature(cls.set_timesteps).parameters:
                    self.schedulers.unsupported.setdefault(
                        name, f"{cls.__name__} has no resolution-dependent shift, which this model's schedule has")

    @property
    def default_size(self) -> int:
        return self.pipeline.default_sample_size * self.vae_scale_factor

    @property
    def size_multiple(self) -> int:
        return self.vae_scale_factor * self.patch

    def image_tokens(self, height: int, width: int) -> int:
        return (height // self.size_multiple) * (width // self.size_multiple)

    def flow_sigmas(self, steps: int) -> np.ndarray | None:
        """Sigmas the family's pipeline gives the sampler (``None``: the sampler's own spacing)."""
        return None

    def set_timesteps(self, scheduler: SchedulerMixin, request: GenerationRequest) -> None:
        config = scheduler.config
        arguments = {}
        if config.get("use_dynamic_shifting", False):
            arguments["mu"] = calculate_shift(
                self.image_tokens(request.height, request.width),
                config.get("base_image_seq_len", 256),
                config.get("max_image_seq_len", 4096),
                config.get("base_shift", 0.5),
                config.get("max_shift", self.default_max_shift),
            )
        sigmas = self.flow_sigmas(request.steps)
        if sigmas is not None and not config.get("use_flow_sigmas", False):
            arguments["sigmas"] = sigmas
        # the Heun sampler takes neither: it spaces its own sigmas (and is refused where the schedule shifts)
        accepted = inspect.signature(scheduler.set_timesteps).parameters
        scheduler.set_timesteps(
            None if "sigmas" in arguments and "sigmas" in accepted else request.steps, device="cpu",
            **{name: value for name, value in arguments.items() if name in accepted},
        )

    def counting_tokenizer(self):
        return getattr(self.pipeline, self.t5_tokenizer)

    def token_limit(self, tokenizer) -> int:
        return self.max_sequence_length
