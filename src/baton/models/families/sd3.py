"""Stable Diffusion 3: an MMDiT over 2x2 latent patches, three text encoders (CLIP-L, CLIP-G, T5), classifier-free
guidance, flow matching with a shift."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import StableDiffusion3Pipeline

from baton.models.transformer import TransformerRunner
from baton.models.types import Conditioning, PromptEmbeddings, PromptInput
from baton.request import GenerationRequest


class StableDiffusion3Runner(TransformerRunner):
    family = "sd3"
    pipeline_class = StableDiffusion3Pipeline
    tiny_vae = "taesd3"
    default_guidance_scale = 7.0
    max_sequence_length = 256
    t5_tokenizer = "tokenizer_3"
    default_max_shift = 1.16

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.patch = self.pipeline.transformer.config.patch_size

    def encode_prompts(self, inputs: list[PromptInput]) -> list[PromptEmbeddings]:
        with_negative = any(item.needs_negative for item in inputs)
        # a missing negative prompt is the encoding of "" (SD3 has no force_zeros_for_empty_prompt)
        positive, negative, pooled, negative_pooled = self.pipeline.encode_prompt(
            prompt=[item.prompt for item in inputs],
            prompt_2=None,
            prompt_3=None,
            device=self.text_device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=with_negative,
            negative_prompt=[item.negative_prompt or "" for item in inputs] if with_negative else None,
            max_sequence_length=self.max_sequence_length,
        )
        results = []
        for i, item in enumerate(inputs):
            tensors = {"prompt": positive[i : i + 1], "pooled": pooled[i : i + 1]}  # [1, 77 + T5 seq, D], [1, P]
            if item.needs_negative:
                tensors["negative"] = negative[i : i + 1]
                tensors["negative_pooled"] = negative_pooled[i : i + 1]
            results.append(PromptEmbeddings(tensors))
        return results

    def conditioning(self, embeddings: PromptEmbeddings, request: GenerationRequest) -> Conditioning:
        return Conditioning(
            hidden_states=self.request_rows(embeddings, request, "prompt", "negative"),
            added={"pooled": self.request_rows(embeddings, request, "pooled", "negative_pooled")},
        )

    def call_denoiser(
        self, module: Any, latents: torch.Tensor, timesteps: torch.Tensor, conditioning: Conditioning
    ) -> torch.Tensor:
        return module(
            hidden_states=latents, timestep=timesteps, encoder_hidden_states=conditioning.hidden_states,
            pooled_projections=conditioning.added["pooled"], return_dict=False,
        )[0]
