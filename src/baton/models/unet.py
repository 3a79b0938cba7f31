"""What the UNet families (SD1.x/2.x, SDXL, and their guidance-distilled LCM variants) share.

A UNet predicts noise (or v) from 4-D latents; its samplers scale the input per step and start from noise scaled
by ``init_noise_sigma``. A guidance-distilled UNet embeds the guidance scale (``timestep_cond``) instead of running
a negative branch.
"""

from __future__ import annotations

from typing import Any

import torch

from baton.device import copy_to_device
from baton.models.runner import ModelRunner, ScaledNoiseSampling
from baton.models.types import Conditioning
from baton.request import GenerationRequest

TIMESTEP_COND = "timestep_cond"
"""The key, among a Conditioning's added tensors, of a guidance-distilled UNet's embedded guidance scale
([rows, time_cond_proj_dim]). It travels with the other per-row conditions (batched, padded to a shape bucket,
copied into a CUDA graph's buffers alike) and goes to the UNet as its ``timestep_cond`` argument."""


class UNetRunner(ScaledNoiseSampling, ModelRunner):
    denoiser_name = "unet"
    # the time and "text_time" embedding MLPs and each resnet's time projection (baton.models.invariance)
    batch_variant_parents = ("time_embedding", "add_embedding", "class_embedding")
    batch_variant_suffixes = ("time_emb_proj",)

    @property
    def default_size(self) -> int:
        sample_size = self.pipeline.unet.config.sample_size
        return (sample_size[0] if isinstance(sample_size, (list, tuple)) else sample_size) * self.vae_scale_factor

    @property
    def latent_channels(self) -> int:
        return self.pipeline.unet.config.in_channels

    @property
    def embeds_guidance(self) -> bool:
        """A guidance-distilled UNet (LCM-distilled SD1.5 and SDXL): it takes the guidance scale as an embedding
        (``timestep_cond``), and classifier-free guidance is off, as diffusers' pipelines do for it."""
        return getattr(self.pipeline.unet.config, "time_cond_proj_dim", None) is not None

    def uses_guidance(self, guidance_scale: float) -> bool:
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

    def call_denoiser(
        self, module: Any, latents: torch.Tensor, timesteps: torch.Tensor, conditioning: Conditioning
    ) -> torch.Tensor:
        """:data:`TIMESTEP_COND` as the UNet's ``timestep_cond``, the other added conditions as
        ``added_cond_kwargs``, as the diffusers pipelines call it."""
        added = conditioning.added
        timestep_cond = added.get(TIMESTEP_COND)
        if timestep_cond is not None:
            added = {name: tensor for name, tensor in added.items() if name != TIMESTEP_COND}
        return module(
            latents, timesteps, encoder_hidden_states=conditioning.hidden_states, timestep_cond=timestep_cond,
            added_cond_kwargs=added or None, return_dict=False,
        )[0]
