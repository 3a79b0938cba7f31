"""Shared fixtures. No test touches the network, and none needs a GPU unless marked ``gpu``."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before diffusers/transformers import: a hub lookup fails fast instead of retrying
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np
import pytest
import torch

from baton import Engine, GenerationRequest
from baton.config import DenoiseConfig, StageConfig
from baton.executors import stacked_pipeline
from baton.models.runner import ModelRunner

TOLERANCE = 1e-5  # max abs difference on pixels in [0, 1] between baton and diffusers for the same seed


def reference_pixels(runner: ModelRunner, request: GenerationRequest) -> np.ndarray:
    """What the plain diffusers pipeline produces for ``request`` (defaults already resolved): [n, H, W, 3]."""
    pipe = stacked_pipeline(runner, request.scheduler)
    return pipe(
        **runner.pipeline_arguments(request), generator=torch.Generator("cpu").manual_seed(request.seed),
        output_type="np",
    ).images


def assert_matches_reference(engine: Engine, result, request: GenerationRequest) -> None:
    request = engine.resolve(request)
    expected = reference_pixels(engine.runners[request.model], request)
    assert result.pixels is not None and result.pixels.shape == expected.shape
    difference = float(np.abs(result.pixels - expected).max())
    assert difference <= TOLERANCE, f"max abs difference {difference} for {request}"


def batching_engine(models: str | tuple[str, ...] = "tiny-sd15", **overrides) -> Engine:
    """An engine whose stages wait long enough for concurrent submissions to share batches."""
    waiting = StageConfig(max_batch_images=16, max_wait_s=0.3)
    overrides.setdefault("device", "cpu")
    overrides.setdefault("denoise", DenoiseConfig(max_rows=32, max_wait_s=0.3))
    return Engine(models=models, encode=waiting, decode=waiting, **overrides)


@pytest.fixture(scope="session")
def sd15_engine():
    with Engine(models=("tiny-sd15", "tiny-sdxl"), device="cpu") as engine:
        yield engine
