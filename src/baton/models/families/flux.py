"""Flux.1: a DiT over packed 2x2 latent patches with RoPE position ids, CLIP-L (pooled) and T5 text, flow matching
with a resolution-dependent shift, and guidance as an embedding per row (dev) or none at all (schnell).

Flux-dev was distilled from classifier-free guidance: it takes the scale as an input and runs no negative branch,
so requests with different scales share a forward like any other per-row input. The position ids depend only on
the image size (and the T5 length), so they are per batch key (``Conditioning.shared``).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np
import torch
from diffusers import FluxPipeline
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from baton.device import copy_to_device
from baton.models.noise import draw_noise
from baton.models.schedulers import FLOW_MATCH_SCHEDULER_CLASSES
from baton.models.transformer import TransformerRunner
from baton.models.types import Conditioning, PromptEmbeddings, PromptInput
from baton.request import GenerationRequest

_POSITION_ID_SIZES = 64
"""Sizes whose position ids are kept on the device (a few MB at most); the least recently used go first."""
GUIDANCE = "guidance"
"""The key, among a Conditioning's added tensors, of Flux-dev's embedded guidance scale ([rows], float32)."""


class FluxRunner(TransformerRunner):
    family = "flux"
    pipeline_class = FluxPipeline
    tiny_vae = "taef1"
    negative_branch = False  # true CFG (a negative prompt at twice the cost) is not served: see `negative_prompt`
    default_guidance_scale = 3.5
    max_sequence_length = 512
    t5_tokenizer = "tokenizer_2"
    default_max_shift = 1.15
    # Heun's schedule has no resolution-dependent shift (and diffusers' Flux pipeline cannot give it its sigmas)
    sampler_classes = {name: cls for name, cls in FLOW_MATCH_SCHEDULER_CLASSES.items() if name != "heun"}
    negative_prompt = ("Flux has no negative branch (Flux-dev embeds its guidance scale, schnell takes none); "
                       "leave it unset")
    unsupported_variants = {
        name: f"{name} needs an input image or a control image, which baton's text-to-image requests do not carry"
        for name in ("FluxKontextPipeline", "FluxFillPipeline", "FluxControlPipeline", "FluxControlNetPipeline",
                     "FluxImg2ImgPipeline", "FluxInpaintPipeline", "FluxPriorReduxPipeline")
    }

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        in_channels = self.pipeline.transformer.config.in_channels
        if in_channels != 4 * self.latent_channels:
            # Fill, Depth and Canny transformers take image latents beside the noise: 384 or 128 channels
            raise ValueError(f"this Flux transformer takes {in_channels} input channels, not 4 x the VAE's "
                             f"{self.latent_channels}: a variant conditioned on an image (Fill, Depth, Canny), "
                             "which text-to-image serving cannot feed")
        self._ids: OrderedDict[tuple[int, int], torch.Tensor] = OrderedDict()  # least recently used first
        # FluxPipeline hard-codes 1024 (its default_sample_size is 128 whatever the model); the VAE's config says
        # 1024 for the published models and the native size of a small one (tiny-flux: 256). Read once: a
        # replacement VAE (the tiny autoencoder) has no sample size.
        self._native_size = int(self.pipeline.vae.config.sample_size)
        if not self.embeds_guidance:
            self.default_guidance_scale = 0.0  # schnell takes no scale; 0 says so in the request's answer

    @property
    def default_size(self) -> int:
        return self._native_size

    @property
    def embeds_guidance(self) -> bool:
        return bool(self.pipeline.transformer.config.guidance_embeds)

    def guidance_condition(self, request: GenerationRequest, rows: int) -> dict[str, torch.Tensor]:
        if not self.embeds_guidance:
            return {}
        scale = torch.full((1,), float(request.guidance_scale), dtype=torch.float32)  # float32, as diffusers
        return {GUIDANCE: copy_to_device(scale, self.device).expand(rows)}

    def latent_shape(self, height: int, width: int) -> tuple[int, ...]:
        return (self.image_tokens(height, width), self.latent_channels * 4)

    def flow_sigmas(self, steps: int) -> np.ndarray | None:
        return np.linspace(1.0, 1 / steps, steps)

    def model_timesteps(self, timesteps: torch.Tensor) -> torch.Tensor:
        return timesteps.to(self.dtype) / 1000  # diffusers casts to the latents' dtype, then scales to [0, 1]

    def initial_latents(
        self, request: GenerationRequest, generator: torch.Generator, scheduler: SchedulerMixin
    ) -> torch.Tensor:
        n, channels = request.num_images, self.latent_channels
        height, width = (2 * (side // self.size_multiple) for side in (request.height, request.width))
        noise = draw_noise((n, channels, height, width), generator, self.device, self.dtype)
        return self.pipeline._pack_latents(noise, n, channels, height, width)  # [n, h/2 * w/2, 4C]

    def unpack(self, latents: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return self.pipeline._unpack_latents(latents, height, width, self.vae_scale_factor)

    def encode_prompts(self, inputs: list[PromptInput]) -> list[PromptEmbeddings]:
        prompt_embeds, pooled, _ = self.pipeline.encode_prompt(
            prompt=[item.prompt for item in inputs], prompt_2=None, device=self.text_device,
            num_images_per_prompt=1, max_sequence_length=self.max_sequence_length,
        )
        return [PromptEmbeddings({"prompt": prompt_embeds[i : i + 1], "pooled": pooled[i : i + 1]})  # [1, T5, D]
                for i in range(len(inputs))]

    def conditioning(self, embeddings: PromptEmbeddings, request: GenerationRequest) -> Conditioning:
        n = request.num_images
        t = embeddings.tensors
        return Conditioning(
            hidden_states=t["prompt"].expand(n, -1, -1),
            added={"pooled": t["pooled"].expand(n, -1), **self.guidance_condition(request, n)},
            shared={"txt_ids": self._position_ids(0, t["prompt"].shape[1]),
                    "img_ids": self._position_ids(request.height, request.width)},
        )

    def _position_ids(self, height: int, width: int) -> torch.Tensor:
        """The image's RoPE ids [tokens, 3] for ``height`` x ``width`` pixels, or the text's (all zeros) for
        ``height`` 0 and ``width`` tokens. Kept per size: they are copied without blocking, but once is enough.
        Called on the denoising thread (and at warm-up, before it starts)."""
        key = (height, width)
        ids = self._ids.get(key)
        if ids is not None:
            self._ids.move_to_end(key)
        else:
            if height == 0:
                ids = torch.zeros(width, 3)
            else:
                side = self.size_multiple
                ids = self.pipeline._prepare_latent_image_ids(1, height // side, width // side, "cpu", torch.float32)
            ids = copy_to_device(ids.to(self.dtype), self.device)
            self._ids[key] = ids
            if len(self._ids) > _POSITION_ID_SIZES:
                self._ids.popitem(last=False)
        return ids

    def call_denoiser(
        self, module: Any, latents: torch.Tensor, timesteps: torch.Tensor, conditioning: Conditioning
    ) -> torch.Tensor:
        return module(
            hidden_states=latents, timestep=timesteps, guidance=conditioning.added.get(GUIDANCE),
            pooled_projections=conditioning.added["pooled"], encoder_hidden_states=conditioning.hidden_states,
            txt_ids=conditioning.shared["txt_ids"], img_ids=conditioning.shared["img_ids"], return_dict=False,
        )[0]
