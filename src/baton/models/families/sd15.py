"""Stable Diffusion 1.x / 2.x: one CLIP text encoder, cross-attention conditioning only."""

from __future__ import annotations

from diffusers import StableDiffusionPipeline

from baton.models.types import Conditioning, PromptEmbeddings, PromptInput
from baton.models.unet import UNetRunner
from baton.request import GenerationRequest


class StableDiffusionRunner(UNetRunner):
    family = "sd15"
    pipeline_class = StableDiffusionPipeline
    default_guidance_scale = 7.5
    # the approximation the SD web UIs use for SD1.x previews
    latent_rgb_factors = ((0.3512, 0.2297, 0.3227), (0.3250, 0.4974, 0.2350), (-0.2829, 0.1762, 0.2721),
                          (-0.2120, -0.2616, -0.7177))
    # StableDiffusionPipeline.__init__ rewrites these two in any scheduler's config (with a deprecation notice).
    scheduler_config_fixes = {"steps_offset": 1, "clip_sample": False}

    def encode_prompts(self, inputs: list[PromptInput]) -> list[PromptEmbeddings]:
        with_negative = any(item.needs_negative for item in inputs)
        # diffusers encodes a missing negative prompt as "", so one padded batch serves every request.
        positive, negative = self.pipeline.encode_prompt(
            [item.prompt for item in inputs],
            self.text_device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=with_negative,
            negative_prompt=[item.negative_prompt or "" for item in inputs] if with_negative else None,
        )
        results = []
        for i, item in enumerate(inputs):
            tensors = {"prompt": positive[i : i + 1]}  # [1, 77, D]
            if item.needs_negative:
                tensors["negative"] = negative[i : i + 1]
            results.append(PromptEmbeddings(tensors))
        return results

    def conditioning(self, embeddings: PromptEmbeddings, request: GenerationRequest) -> Conditioning:
        hidden = self.request_rows(embeddings, request, "prompt", "negative")
        return Conditioning(hidden_states=hidden, added=self.guidance_condition(request, hidden.shape[0]))
