"""Image encoding: host pixels → PIL images and PNG/JPEG/WebP bytes on a small CPU pool, then the result."""

from __future__ import annotations

import io
import logging
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image

from baton.config import StageConfig
from baton.device import Mark
from baton.errors import StageError
from baton.request import GenerationResult
from baton.stage_names import IMAGE_ENCODE, STAGE_ORDER
from baton.stages.base import BatchStage
from baton.stages.job import Job, StageRecord

logger = logging.getLogger(__name__)

# Lossless PNG at a low zlib level: several times faster than PIL's default at a slightly larger file.
_SAVE_OPTIONS = {"png": {"compress_level": 1}, "jpeg": {"quality": 90}, "webp": {"quality": 90}}


def quantize(pixels: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """Pixels in [0, 1] → uint8, rounded as diffusers' ``numpy_to_pil`` rounds (``(x * 255).round()``), so that
    images equal the plain pipeline's; on whichever device the tensor is."""
    if isinstance(pixels, np.ndarray):
        return (pixels * 255).round().astype(np.uint8)
    return (pixels * 255).round().to(torch.uint8)


def to_host_pixels(pixels: torch.Tensor, output_format: str) -> torch.Tensor:
    """Pixels [n, 3, H, W] in [0, 1] → [n, H, W, 3] on the host: float32 for ``np``, else uint8 (:func:`quantize`).
    Used by the stacked baseline; the staged decoder does the same."""
    pixels = pixels.permute(0, 2, 3, 1).float()
    if output_format != "np":
        pixels = quantize(pixels)
    return pixels.cpu()


def build_result(job: Job, pixels: torch.Tensor) -> GenerationResult:
    """Turn a request's host pixels into its :class:`GenerationResult` (PIL images, bytes when asked)."""
    request = job.request
    array = pixels.numpy()
    if request.output_format == "np":
        images = [Image.fromarray(quantize(image)) for image in array]
        encoded = None
    else:
        images = [Image.fromarray(image) for image in array]
        encoded = [_encode(image, request.output_format) for image in images]
    return GenerationResult(
        request_id=job.request_id,
        seed=job.seed,
        images=images,
        encoded=encoded,
        pixels=array if request.output_format == "np" else None,
        warnings=list(job.warnings),
        width=request.width,
        height=request.height,
    )


def complete(job: Job, result: GenerationResult) -> None:
    """Attach timings and settle the request's future."""
    # pipeline order, whichever thread ran a stage (fused stages enter text_encode after denoise's queue)
    order = {stage: i for i, stage in enumerate(STAGE_ORDER)}
    stages = sorted(job.records, key=lambda stage: order.get(stage, len(order)))
    result.timings = {stage: job.records[stage].timing() for stage in stages}
    result.latency_s = time.perf_counter() - job.submitted_at
    job.finish(result)


def _encode(image: Image.Image, output_format: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=output_format.upper(), **_SAVE_OPTIONS[output_format])
    return buffer.getvalue()


class ImageEncodeStage(BatchStage):
    """Waits for each request's pixels to reach the host, then encodes them on a CPU pool and completes it."""

    name = IMAGE_ENCODE

    def __init__(self, config: StageConfig, *args, workers: int, **kwargs) -> None:
        super().__init__(config, *args, **kwargs)
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="baton-image")

    def batch_size(self, job: Job) -> int:
        return 1

    def run_batch(self, jobs: list[Job]) -> None:
        for job in jobs:
            if job.ready is not None:
                job.ready.synchronize()  # the decoder's device→host copy; the only host wait in the pipeline
            self.pool.submit(self._encode_and_complete, job)

    def _encode_and_complete(self, job: Job) -> None:
        record: StageRecord = job.records[self.name]
        record.started = Mark(time.perf_counter())
        try:
            result = build_result(job, job.pixels)
        except Exception as exc:
            logger.exception("encoding the images of request %s failed", job.request_id)
            job.fail(StageError(self.name, exc))
            return
        record.finished = Mark(time.perf_counter())
        complete(job, result)

    def shutdown(self) -> None:
        self.pool.shutdown(wait=True)
