"""The pipeline stages: text encode → denoise → VAE decode → image encode, each a worker over a queue."""

from baton.stages.base import SENTINEL, BatchStage, Stage
from baton.stages.decode import VaeDecodeStage
from baton.stages.denoise import DenoiseStage
from baton.stages.encode import TextEncodeStage
from baton.stages.image_encode import ImageEncodeStage
from baton.stages.job import Job, PreviewCallback, ProgressCallback

__all__ = [
    "SENTINEL",
    "BatchStage",
    "DenoiseStage",
    "ImageEncodeStage",
    "Job",
    "PreviewCallback",
    "ProgressCallback",
    "Stage",
    "TextEncodeStage",
    "VaeDecodeStage",
]
