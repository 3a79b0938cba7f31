"""Stable Diffusion XL: two CLIP text encoders, plus pooled-text and size ("text_time") conditioning."""

from __future__ import annotations

import torch
from diffusers import StableDiffusionXLPipeline

from baton.device import copy_to_device
from baton.models.types import Conditioning, PromptEmbeddings, PromptInput
from baton.models.unet import UNetRunner
from baton.request import GenerationRequest


class StableDiffusionXLRunner(UNetRunner):
    family = "sdxl"
    pipeline_class = StableDiffusionXLPipeline
    tiny_vae = "taesdxl"
    default_guidance_scale = 5.0
    # the approximation the SD web UIs use for SDXL previews
    latent_rgb_factors = ((0.3920, 0.4054, 0.4549), (-0.2634, -0.0196, 0.0653), (0.0568, 0.1687, -0.0755),
                          (-0.3112, -0.2359, -0.2076))
    upcast_vae_in_float16 = True

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._time_ids_by_size: dict[tuple, torch.Tensor] = {}

    def encode_prompts(self, inputs: list[PromptInput]) -> list[PromptEmbeddings]:
        with_negative = any(item.needs_negative for item in inputs)
        positive, negative, pooled, negative_pooled = self.pipeline.encode_prompt(
            prompt=[item.prompt for item in inputs],
            device=self.text_device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=with_negative,
            negative_prompt=[item.negative_prompt or "" for item in inputs] if with_negative else None,
        )
        # SDXL uses zeros, not the encoding of "", for a missing negative prompt (force_zeros_for_empty_prompt).
        # A batch mixes both kinds, so the zeros are put in per request, as diffusers would for each alone.
        zero_missing = bool(self.pipeline.config.get("force_zeros_for_empty_prompt", False))
        results = []
        for i, item in enumerate(inputs):
            tensors = {"prompt": positive[i : i + 1], "pooled": pooled[i : i + 1]}  # [1, 77, D], [1, P]
            if item.needs_negative:
                if item.negative_prompt is None and zero_missing:
                    tensors["negative"] = torch.zeros_like(tensors["prompt"])
                    tensors["negative_pooled"] = torch.zeros_like(tensors["pooled"])
                else:
                    tensors["negative"] = negative[i : i + 1]
                    tensors["negative_pooled"] = negative_pooled[i : i + 1]
            results.append(PromptEmbeddings(tensors))
        return results

    def conditioning(self, embeddings: PromptEmbeddings, request: GenerationRequest) -> Conditioning:
        prompt = embeddings.tensors["prompt"]
        time_ids = self._time_ids(request.height, request.width, prompt.dtype, prompt.device)
        hidden = self.request_rows(embeddings, request, "prompt", "negative")
        rows = hidden.shape[0]
        return Conditioning(
            hidden_states=hidden,
            added={"text_embeds": self.request_rows(embeddings, request, "pooled", "negative_pooled"),
                   "time_ids": time_ids.expand(rows, -1).contiguous(), **self.guidance_condition(request, rows)},
        )

    def _time_ids(self, height: int, width: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """The micro-conditioning diffusers uses by default (original size = target size, no crop), [1, 6].

        Built once per size: ``torch.tensor(..., device=cuda)`` from Python values is a blocking copy, and this
        runs as each request is admitted to the step loop."""
        key = (height, width, dtype, device)
        time_ids = self._time_ids_by_size.get(key)
        if time_ids is None:
            time_ids = copy_to_device(torch.tensor([[height, width, 0, 0, height, width]], dtype=dtype), device)
            self._time_ids_by_size[key] = time_ids
        return time_ids

