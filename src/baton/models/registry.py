"""Model names → loaded runners: built-in random-weight architectures, local folders and hub ids."""

from __future__ import annotations

import logging
import os
import time
import warnings

import torch
from diffusers import DiffusionPipeline

from baton.models.builtin import SPECS
from baton.models.families import RUNNERS
from baton.models.runner import ModelRunner

logger = logging.getLogger(__name__)

BUILTIN_MODELS: tuple[str, ...] = tuple(SPECS)
_RUNNER_BY_FAMILY = {runner.family: runner for runner in RUNNERS}
_RUNNER_BY_PIPELINE = {runner.pipeline_class.__name__: runner for runner in RUNNERS}


class ModelLoadError(ValueError):
    """A model name that is neither built in, nor a loadable folder, nor a reachable hub id."""


def load_model(name: str, device: torch.device, dtype: torch.dtype) -> ModelRunner:
    """Load ``name`` onto ``device`` in ``dtype`` and wrap it in its family's runner.

    ``name`` is a built-in (see :data:`BUILTIN_MODELS`), a local folder written by ``save_pretrained``, or a
    Hugging Face hub id (which needs the weights in the local cache, or network access).
    """
    start = time.perf_counter()
    spec = SPECS.get(name)
    if spec is not None:
        runner = _RUNNER_BY_FAMILY[spec.family](name, spec.build(device, dtype), device, dtype)
    else:
        runner = _load_pretrained(name, device, dtype)
    logger.info("loaded %s (%s, %s, %s) in %.1f s", name, runner.family, device, dtype, time.perf_counter() - start)
    return runner


def _load_pretrained(name: str, device: torch.device, dtype: torch.dtype) -> ModelRunner:
    where = "local folder" if os.path.isdir(name) else "hub id"
    try:
        with warnings.catch_warnings():  # huggingface_hub's deprecation chatter about its own arguments
            warnings.simplefilter("ignore")
            class_name = DiffusionPipeline.load_config(name)["_class_name"]
    except Exception as exc:  # diffusers raises several types for a missing folder or an unreachable hub
        raise ModelLoadError(
            f"unknown model {name!r}: not a built-in model ({', '.join(BUILTIN_MODELS)}), and as a {where} "
            f"it could not be read: {exc}"
        ) from exc
    runner_class = _RUNNER_BY_PIPELINE.get(class_name)
    if runner_class is None:
        raise ModelLoadError(
            f"model {name!r} is a {class_name}; supported pipelines are {sorted(_RUNNER_BY_PIPELINE)}"
        )
    extra = {}
    if runner_class.family == "sd15":
        # The SD1.x safety checker is a second CLIP model run on every image; serving puts moderation elsewhere.
        extra = {"safety_checker": None, "requires_safety_checker": False}
    pipeline = runner_class.pipeline_class.from_pretrained(name, torch_dtype=dtype, **extra)
    pipeline.to(device)
    return runner_class(name, pipeline, device, dtype)
