"""PixArt-Σ: a DiT with cross-attention to T5 (no CLIP), AdaLN-single timestep conditioning, a learned variance
beside the noise, and the noise-predicting samplers of the UNet families (DPM-Solver++ by default).

The third family, written against the runner's hooks to show what a new one takes: it is neither a UNet nor a
flow-matching transformer, so it derives from :class:`ModelRunner`, with the noise-predicting samplers' input
scaling it shares with the UNets (:class:`ScaledNoiseSampling`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from diffusers import PixArtSigmaPipeline

from baton.models.runner import ModelRunner, ScaledNoiseSampling
from baton.models.types import Conditioning, PromptEmbeddings, PromptInput
from baton.request import GenerationRequest

ATTENTION_MASK = "attention_mask"
"""The key, among a Conditioning's added tensors, of the T5 padding mask ([rows, 300]): PixArt masks the padding
in its cross-attention, so it is per row like the embeddings."""
# PixArt-Σ's pipeline takes size micro-conditions only in PixArt-α; it passes none
_NO_MICRO_CONDITIONS: dict[str, None] = {"resolution": None, "aspect_ratio": None}


class PixArtSigmaRunner(ScaledNoiseSampling, ModelRunner):
    family = "pixart"
    pipeline_class = PixArtSigmaPipeline
    denoiser_name = "transformer"
    default_guidance_scale = 4.5
    tiny_vae = "taesdxl"  # it decodes with SDXL's VAE
    batch_variant_parents = ("adaln_single",)  # the timestep embedding and its AdaLN projection: [B, D] inputs
    max_sequence_length: ClassVar[int] = 300

    @property
    def default_size(self) -> int:
        return self.pipeline.transformer.config.sample_size * self.vae_scale_factor

    @property
    def size_multiple(self) -> int:
        return self.vae_scale_factor * self.pipeline.transformer.config.patch_size

    @property
    def latent_channels(self) -> int:
        return self.pipeline.transformer.config.in_channels

    def model_output(self, prediction: torch.Tensor) -> torch.Tensor:
        if self.pipeline.transformer.config.out_channels // 2 == self.latent_channels:
            return prediction.chunk(2, dim=1)[0]  # the noise; the learned variance is for training
        return prediction

    def pipeline_arguments(self, request: GenerationRequest) -> dict[str, Any]:
        # The pipeline would snap the size to an aspect-ratio bin, generate there and resize: baton serves the
        # asked size itself, so the baseline does too. Captions are not cleaned (the pipeline's default, which
        # needs bs4 and ftfy and rewrites the prompt): baton encodes the prompt as given. A missing negative
        # prompt is "" to the pipeline (None breaks its text preprocessing).
        return {**super().pipeline_arguments(request), "use_resolution_binning": False, "clean_caption": False,
                "negative_prompt": request.negative_prompt or ""}

    def token_limit(self, tokenizer) -> int:
        return self.max_sequence_length

    def encode_prompts(self, inputs: list[PromptInput]) -> list[PromptEmbeddings]:
        with_negative = any(item.needs_negative for item in inputs)
        positive, mask, negative, negative_mask = self.pipeline.encode_prompt(
            [item.prompt for item in inputs],
            do_classifier_free_guidance=with_negative,
            negative_prompt=[item.negative_prompt or "" for item in inputs] if with_negative else "",
            num_images_per_prompt=1,
            device=self.text_device,
            clean_caption=False,
            max_sequence_length=self.max_sequence_length,
        )
        results = []
        for i, item in enumerate(inputs):
            tensors = {"prompt": positive[i : i + 1], ATTENTION_MASK: mask[i : i + 1]}  # [1, 300, D], [1, 300]
            if item.needs_negative:
                tensors["negative"] = negative[i : i + 1]
                tensors["negative_mask"] = negative_mask[i : i + 1]
            results.append(PromptEmbeddings(tensors))
        return results

    def conditioning(self, embeddings: PromptEmbeddings, request: GenerationRequest) -> Conditioning:
        return Conditioning(
            hidden_states=self.request_rows(embeddings, request, "prompt", "negative"),
            added={ATTENTION_MASK: self.request_rows(embeddings, request, ATTENTION_MASK, "negative_mask")},
        )

    def call_denoiser(
        self, module: Any, latents: torch.Tensor, timesteps: torch.Tensor, conditioning: Conditioning
    ) -> torch.Tensor:
        return module(
            latents, encoder_hidden_states=conditioning.hidden_states,
            encoder_attention_mask=conditioning.added[ATTENTION_MASK], timestep=timesteps,
            added_cond_kwargs=_NO_MICRO_CONDITIONS, return_dict=False,
        )[0]
