"""VAE decoding, then the one copy of the pixels to the host."""

from __future__ import annotations

from collections.abc import Hashable

import torch

from baton.stage_names import VAE_DECODE
from baton.stages.base import BatchStage
from baton.stages.image_encode import quantize
from baton.stages.job import Job


class VaeDecodeStage(BatchStage):
    name = VAE_DECODE

    def batch_key(self, job: Job) -> Hashable:
        return (job.runner.name, job.request.height, job.request.width)

    def run_batch(self, jobs: list[Job]) -> None:
        for job in jobs:
            self.stream.wait(job.ready, job.latents)
        latents = torch.cat([job.latents for job in jobs])  # [B, ...] as the denoiser keeps them
        request = jobs[0].request  # one batch key: one size
        pixels = jobs[0].runner.decode(latents, request.height, request.width)
        pixels = pixels.permute(0, 2, 3, 1).float()  # [B, H, W, 3] in [0, 1]
        offset = 0
        for job in jobs:
            mine = pixels[offset : offset + job.request.num_images]
            offset += job.request.num_images
            if job.request.output_format != "np":
                mine = quantize(mine)  # on the device, to copy a quarter of the bytes
            # Asynchronous on CUDA (pinned memory); the image stage waits on this stage's event before reading.
            job.pixels = mine.to("cpu", non_blocking=True)
            job.latents = None
            self.hand_on(job)
