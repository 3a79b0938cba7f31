"""Model names → loaded runners: embedded trained models, built-in random-weight architectures, local folders and
hub ids."""

from __future__ import annotations

import json
import logging
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from diffusers import DiffusionPipeline

from baton.models.builtin import SPECS
from baton.models.families import RUNNERS
from baton.models.runner import ModelRunner

logger = logging.getLogger(__name__)

EMBEDDED_MODELS: dict[str, Path] = {"shapes": Path(__file__).parent / "weights" / "shapes"}
"""Trained models whose weights ship inside the package (``baton train-shapes`` made ``shapes``)."""
BUILTIN_MODELS: tuple[str, ...] = (*EMBEDDED_MODELS, *SPECS)
_RUNNER_BY_FAMILY = {runner.family: runner for runner in RUNNERS}
_RUNNER_BY_PIPELINE = {runner.pipeline_class.__name__: runner for runner in RUNNERS}
# LCM-distilled SD1.5 folders (SimianLuo/LCM_Dreamshaper_v7) name diffusers' LCM pipeline, which holds the same
# components as StableDiffusionPipeline: they load as SD1.5 with their LCMScheduler as the default sampler
_RUNNER_BY_PIPELINE["LatentConsistencyModelPipeline"] = _RUNNER_BY_FAMILY["sd15"]


SERVING_DEFAULTS_FILE = "baton.json"
"""An optional file in a model folder with the defaults baton serves it with, all optional:
``{"guidance_scale": 2.0, "max_size": 128, "example_prompt": "a red circle on a blue background"}``. A small
model trained here can need a guidance scale far from its family's (the shapes model over-saturates at SD1.5's
7.5), a size limit of its own, and a prompt that shows what it draws; the folder is where that knowledge belongs."""
SERVING_DEFAULT_KEYS = ("guidance_scale", "max_size", "example_prompt")


def embedded_parameter_counts(name: str) -> dict[str, int]:
    """Parameters per component of an embedded model, read from its safetensors headers (no weights loaded)."""
    from safetensors import safe_open

    counts = {}
    for weights in sorted(EMBEDDED_MODELS[name].glob("*/*.safetensors")):
        with safe_open(weights, framework="pt") as tensors:
            # a safetensors handle is not iterable: its names come from .keys()
            names = tensors.keys()
            counts[weights.parent.name] = sum(math.prod(tensors.get_slice(key).get_shape()) for key in names)
    return counts


class ModelLoadError(ValueError):
    """A model name that is neither built in, nor a loadable folder, nor a reachable hub id."""


def runner_class(name: str) -> type[ModelRunner] | None:
    """The runner class ``name`` would load with, read without loading weights (``None``: not known here)."""
    spec = SPECS.get(name)
    if spec is not None:
        return _RUNNER_BY_FAMILY[spec.family]
    source = str(EMBEDDED_MODELS.get(name, name))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _RUNNER_BY_PIPELINE.get(DiffusionPipeline.load_config(source)["_class_name"])
    except Exception:  # a missing folder or an unreachable hub id: load_model will say why
        return None


def load_model(name: str, device: torch.device, dtype: torch.dtype) -> ModelRunner:
    """Load ``name`` onto ``device`` in ``dtype`` and wrap it in its family's runner.

    ``name`` is a built-in (see :data:`BUILTIN_MODELS`: embedded trained weights or a random-weight
    architecture), a local folder written by ``save_pretrained``, or a Hugging Face hub id (which needs the
    weights in the local cache, or network access).
    """
    start = time.perf_counter()
    spec = SPECS.get(name)
    if spec is not None:
        runner = _RUNNER_BY_FAMILY[spec.family](name, spec.build(device, dtype), device, dtype)
    elif name in EMBEDDED_MODELS:
        runner = _load_pretrained(str(EMBEDDED_MODELS[name]), device, dtype, name=name)
    else:
        runner = _load_pretrained(name, device, dtype)
    logger.info("loaded %s (%s, %s, %s) in %.1f s", name, runner.family, device, dtype, time.perf_counter() - start)
    return runner


def _load_pretrained(source: str, device: torch.device, dtype: torch.dtype, name: str | None = None) -> ModelRunner:
    """Load a folder or hub id ``source``; the runner is called ``name`` (default: ``source``)."""
    name = name or source
    where = "local folder" if os.path.isdir(source) else "hub id"
    try:
        with warnings.catch_warnings():  # huggingface_hub's deprecation chatter about its own arguments
            warnings.simplefilter("ignore")
            class_name = DiffusionPipeline.load_config(source)["_class_name"]
    except Exception as exc:  # diffusers raises several types for a missing folder or an unreachable hub
        raise ModelLoadError(
            f"unknown model {name!r}: not a built-in model ({', '.join(BUILTIN_MODELS)}), and as a {where} "
            f"it could not be read: {exc}"
        ) from exc
    runner_class = _RUNNER_BY_PIPELINE.get(class_name)
    unsupported = {variant: why for runner in RUNNERS for variant, why in runner.unsupported_variants.items()}
    if class_name in unsupported:
        raise ModelLoadError(f"model {name!r} is a {class_name}, which baton does not serve: {unsupported[class_name]}")
    if runner_class is None:
        raise ModelLoadError(
            f"model {name!r} is a {class_name}; supported pipelines are {sorted(_RUNNER_BY_PIPELINE)}"
        )
    extra = {}
    if runner_class.family == "sd15":
        # The SD1.x safety checker is a second CLIP model run on every image; serving puts moderation elsewhere.
        extra = {"safety_checker": None, "requires_safety_checker": False}
    defaults = _serving_defaults(source)
    pipeline = runner_class.pipeline_class.from_pretrained(source, dtype=dtype, **extra)
    pipeline.to(device)
    try:
        runner = runner_class(name, pipeline, device, dtype)
    except ValueError as exc:  # a variant the family's runner cannot serve, found in its config
        raise ModelLoadError(f"model {name!r} cannot be served: {exc}") from exc
    runner.source = source
    if "guidance_scale" in defaults:
        runner.default_guidance_scale = defaults["guidance_scale"]
    runner.example_prompt = defaults.get("example_prompt")
    runner.max_size = defaults.get("max_size")
    if runner.max_size is not None and (runner.max_size < runner.default_size
                                        or runner.max_size % runner.size_multiple):
        raise ModelLoadError(f"`max_size` in {Path(source) / SERVING_DEFAULTS_FILE} must be a multiple of "
                             f"{runner.size_multiple} and at least the model's native size {runner.default_size}, "
                             f"got {runner.max_size}")
    return runner


def _serving_defaults(source: str) -> dict[str, Any]:
    """The folder's ``baton.json``, checked (a hub id has none)."""
    path = Path(source) / SERVING_DEFAULTS_FILE
    if not path.is_file():
        return {}
    try:
        defaults = json.loads(path.read_text())
    except ValueError as exc:
        raise ModelLoadError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(defaults, dict) or set(defaults) - set(SERVING_DEFAULT_KEYS):
        raise ModelLoadError(f"{path} must be a JSON object with only {list(SERVING_DEFAULT_KEYS)}, got {defaults!r}")
    guidance = defaults.get("guidance_scale", 0.0)
    if isinstance(guidance, bool) or not isinstance(guidance, (int, float)) or not math.isfinite(guidance) \
            or guidance < 0:
        raise ModelLoadError(f"`guidance_scale` in {path} must be a finite number >= 0, got {guidance!r}")
    max_size = defaults.get("max_size", 8)
    if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 8 or max_size % 8:
        raise ModelLoadError(f"`max_size` in {path} must be an integer multiple of 8, got {max_size!r}")
    prompt = defaults.get("example_prompt", "x")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ModelLoadError(f"`example_prompt` in {path} must be a non-empty string, got {prompt!r}")
    if "guidance_scale" in defaults:
        defaults["guidance_scale"] = float(defaults["guidance_scale"])
    return defaults
