"""``baton bench quality``: what each optimization, preset, sampler, step count and guidance scale does to the
images.

Two prompt sets, each prompt with its own seed:

- **template**: held-out shapes captions (combinations training never saw, in the training template);
- **free-form**: the hand-written prompts of ``baton.shapes.prompts`` (six styles of typed prompt, each tagged with
  the attributes it names), each drawn with several seeds.

Every row draws all of them through the engine (submitted together, so the denoiser batches as it would in
serving), in a fresh process. Measures per row:

- **prompt accuracy**: the share of images in which the classical detector (``baton.shapes.detector``) reads the
  prompt's colour, shape and count (and size and position, reported too); for free-form prompts, the share with
  every named attribute right, overall and per style;
- **drift**: PSNR and SSIM against the float32 reference row's image of the same prompt and seed.

A stacked row runs the plain diffusers pipeline on the same prompts and seeds, as the baseline. Rows the device
cannot run are reported as skipped with the engine's own reason.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from baton.bench.image_metrics import psnr_db, ssim
from baton.bench.isolation import refusal, run_isolated, start_engine
from baton.bench.machine import describe_machine
from baton.bench.optimizations import preset_configs
from baton.config import CompileConfig, EngineConfig, OptimizationConfig, PromptCacheConfig
from baton.request import DEFAULT_STEPS
from baton.shapes.detector import accuracy as detector_accuracy
from baton.shapes.prompts import FREE_FORM_PROMPTS, FreeFormPrompt, free_form_accuracy, free_form_subset
from baton.shapes.scenes import Scene, caption, sample_scenes

logger = logging.getLogger(__name__)

PROMPT_SEED = 2026  # the held-out prompt set's seed (training's own check uses another)
TARGETS = {"colour": 0.98, "shape": 0.90, "count": 0.90, "position": 0.95}
"""The bar the default model must reach on template captions at the default steps (what the headline checks
compare with)."""
FREE_FORM_TARGET = 0.80
"""The share of free-form images with every named attribute right, overall and in every style."""
NATIVE_SIDE_AT_MOST = 1024
"""A bound on the native side of a model the bench may draw (SDXL's), for the admission limit."""
MAX_DROP_POINTS = 1.0
"""How far half precision, compile and the prompt cache may move an accuracy (percentage points)."""


@dataclass(frozen=True, slots=True)
class QualitySettings:
    model: str = "shapes"
    prompts: int = 200
    steps: tuple[int, ...] = (10, 20, 50)
    """Step counts measured besides the default (the reference configuration at each)."""
    guidance: tuple[float, ...] = (1.0, 3.0)
    """Guidance scales measured besides the model's default (the reference configuration at each)."""
    free_form_seeds: int = 4
    """Seeds per free-form prompt (0: the template set only)."""
    free_form_prompts: int = len(FREE_FORM_PROMPTS)
    """How many free-form prompts, spread over the styles (``baton.shapes.prompts.free_form_subset``)."""
    device: str = "auto"
    seed: int = 0
    only: tuple[str, ...] = ()
    """Run only the rows whose names contain one of these (the reference always runs)."""
    compile_cache: str | None = None
    timeout_s: float = 3600.0

    def __post_init__(self) -> None:
        if self.prompts < 1:
            raise ValueError(f"`prompts` must be >= 1, got {self.prompts!r}")
        if any(s < 1 for s in self.steps):
            raise ValueError(f"`steps` must all be >= 1, got {self.steps!r}")
        if any(not g >= 1.0 for g in self.guidance):
            raise ValueError(f"`guidance` must all be >= 1.0, got {self.guidance!r}")
        if self.free_form_seeds < 0:
            raise ValueError(f"`free_form_seeds` must be >= 0, got {self.free_form_seeds!r}")
        if not 1 <= self.free_form_prompts <= len(FREE_FORM_PROMPTS):
            raise ValueError(f"`free_form_prompts` must be between 1 and {len(FREE_FORM_PROMPTS)}, got "
                             f"{self.free_form_prompts!r}")


@dataclass(frozen=True, slots=True)
class Row:
    name: str
    config: EngineConfig
    kind: str  # "reference", "baseline", "option", "sampler", "preset", "steps", "guidance"
    steps: int = DEFAULT_STEPS
    scheduler: str = "default"
    guidance: float | None = None
    """``None``: the model's own default."""
    gated: bool = False
    """One of the options whose accuracy may move by at most :data:`MAX_DROP_POINTS` (the issue's rule)."""


def quality_prompts(settings: QualitySettings) -> list[Scene]:
    return sample_scenes(settings.prompts, seed=PROMPT_SEED, held_out=True)


def free_form_prompts(settings: QualitySettings) -> list[FreeFormPrompt]:
    """Each free-form prompt ``free_form_seeds`` times (drawn after the template prompts, with the seeds that
    follow theirs)."""
    return [prompt for prompt in free_form_subset(settings.free_form_prompts) for _ in range(settings.free_form_seeds)]


def row_prompts(settings: QualitySettings) -> list[str]:
    """What a row draws, in order: the template captions, then the free-form prompts."""
    return [caption(scene) for scene in quality_prompts(settings)] + [p.text for p in free_form_prompts(settings)]


def quality_rows(settings: QualitySettings, device_type: str) -> list[Row]:
    prompts = row_prompts(settings)
    drawn = len(prompts)
    # every prompt is submitted at once: admission must take them all (native size, at the most steps of any row)
    most_steps = max((DEFAULT_STEPS, *settings.steps))
    base = EngineConfig(models=(settings.model,), device=settings.device, dtype="float32",
                        max_queue=max(256, drawn), stage_queue_size=max(64, drawn),
                        max_queued_pixel_steps=drawn * NATIVE_SIDE_AT_MOST**2 * most_steps)
    rows_per_forward = base.denoise.max_rows
    plain = OptimizationConfig()

    def row(name: str, options: OptimizationConfig = plain, kind: str = "option", dtype: str = "float32",
            **fields) -> Row:
        return Row(name, dataclasses.replace(base, dtype=dtype, optimizations=options), kind, **fields)

    # one bucket (the denoiser's full batch) at the native size: the bench keeps the denoiser full
    compiled = CompileConfig(enabled=True, batch_buckets=(rows_per_forward,), cache_dir=settings.compile_cache)
    rows = [
        row("fp32 (reference)", kind="reference"),
        Row("diffusers fp32 (stacked)", dataclasses.replace(base, mode="stacked"), "baseline"),
        row("fp16", dtype="float16", gated=True),
        row("bf16", dtype="bfloat16", gated=True),
        row("bf16 text encoder", dataclasses.replace(plain, text_encoder_dtype="bfloat16")),
        row("bf16 VAE", dataclasses.replace(plain, vae_dtype="bfloat16")),
        row("compile", dataclasses.replace(plain, compile=compiled), gated=True),
        row("prompt cache (every prompt precomputed)", dataclasses.replace(
            plain, prompt_cache=PromptCacheConfig(max_bytes=64 * 2**20, precompute=tuple(dict.fromkeys(prompts)))),
            gated=True),
        row("classic attention", dataclasses.replace(plain, attention="classic")),
        row("fused QKV", dataclasses.replace(plain, fuse_qkv=True)),
        row("channels_last", dataclasses.replace(plain, channels_last=True)),
        row("VAE slicing", dataclasses.replace(plain, vae_slicing=True)),
        row("VAE tiling", dataclasses.replace(plain, vae_tiling=True)),
        row("tiny autoencoder", dataclasses.replace(plain, vae="tiny")),  # the model's own if it has one
    ]
    rows += [row(f"sampler {name}", kind="sampler", scheduler=name) for name in ("euler", "dpmpp_2m")]
    rows += [Row(f"preset {name}", config, "preset") for name, config in preset_configs(base, device_type,
                                                                                        compiled).items()]
    rows += [row(f"{steps} steps", kind="steps", steps=steps) for steps in settings.steps
             if steps != DEFAULT_STEPS]
    rows += [row(f"guidance {scale:g}", kind="guidance", guidance=scale) for scale in settings.guidance]
    if settings.only:
        rows = [r for r in rows if r.kind == "reference" or any(part in r.name for part in settings.only)]
    return rows


def run_quality(settings: QualitySettings, log=logger.info) -> dict:
    """Run every row in its own process, score it, and return the report."""
    import torch

    from baton.device import resolve_device

    device = resolve_device(settings.device)
    scenes = quality_prompts(settings)
    free_form = free_form_prompts(settings)
    results: list[dict[str, Any]] = []
    reference: np.ndarray | None = None
    with tempfile.TemporaryDirectory(prefix="baton-quality-") as scratch:
        for index, row in enumerate(quality_rows(settings, device.type)):
            log(f"[{index + 1}] {row.name}")
            pixels_path = Path(scratch) / f"{index}.npy"
            reason = refusal(row.config, device)
            result = ({"status": "skipped", "reason": reason} if reason else
                      run_isolated(_draw_row, row, settings, str(pixels_path), timeout_s=settings.timeout_s))
            result.update(config=row.name, kind=row.kind, steps=row.steps, scheduler=row.scheduler,
                          guidance=row.guidance, gated=row.gated, mode=row.config.mode)
            if result["status"] == "ok":
                pixels = np.load(pixels_path)
                if row.kind == "reference":
                    reference = pixels
                result.update(accuracy(scenes, pixels[: len(scenes)]))
                if free_form:
                    result["free_form"] = free_form_shares(free_form, pixels[len(scenes):])
                result.update(drift(reference, pixels))
                log("    " + ", ".join(f"{a} {result['accuracy'][a]:.1%}" for a in TARGETS)
                    + (f"; free-form {result['free_form']['overall']['all named']:.1%}" if free_form else "")
                    + f"; PSNR {_psnr_text(result)}"
                    + f"; {result['images_per_s']:.1f} images/s")
            else:
                log(f"    {result['status']}: {result['reason'].splitlines()[0]}")
            results.append(result)
    add_deltas(results)
    return {
        "benchmark": "quality",
        "settings": {**asdict(settings), "default_steps": DEFAULT_STEPS, "prompt_seed": PROMPT_SEED,
                     "targets": TARGETS, "free_form_target": FREE_FORM_TARGET,
                     "max_drop_points": MAX_DROP_POINTS, "device": str(device)},
        "machine": describe_machine(str(device)),
        "results": results,
        "torch": torch.__version__,
    }


def accuracy(scenes: list[Scene], pixels: np.ndarray) -> dict[str, Any]:
    """Per attribute, the share of images the detector reads as the prompt says; and all of colour, shape, count."""
    return {"accuracy": {name: round(share, 4) for name, share in detector_accuracy(scenes, pixels).items()}}


def free_form_shares(prompts: list[FreeFormPrompt], pixels: np.ndarray) -> dict[str, dict[str, float]]:
    """Per style and overall: every named attribute right, and each attribute where named."""
    return {group: {name: round(share, 4) for name, share in shares.items()}
            for group, shares in free_form_accuracy(prompts, pixels).items()}


def _psnr_text(result: dict) -> str:
    if result["identical"]:
        return "identical"
    return "n/a (other image size)" if result["psnr_db"] is None else f"{result['psnr_db']:.1f} dB"


def drift(reference: np.ndarray | None, pixels: np.ndarray) -> dict[str, float | None]:
    """PSNR (dB over the whole set; ``None`` when identical), mean SSIM and the max abs difference against the
    reference row's images."""
    if reference is None or reference.shape != pixels.shape:
        return {"psnr_db": None, "ssim": None, "max_abs_diff": None, "identical": False}
    psnr = psnr_db(reference, pixels)
    return {"psnr_db": None if psnr is None else round(psnr, 2),
            "ssim": round(float(np.mean([ssim(r, p) for r, p in zip(reference, pixels)])), 4),
            "max_abs_diff": round(float(np.abs(reference.astype(np.float64) - pixels).max()), 6),
            "identical": psnr is None}


def add_deltas(results: list[dict]) -> None:
    """Each row's accuracy change from the reference, in percentage points."""
    reference = next((r for r in results if r["kind"] == "reference" and r["status"] == "ok"), None)
    for row in results:
        if row["status"] != "ok" or reference is None:
            row["delta_points"] = None
            continue
        row["delta_points"] = {a: round(100 * (row["accuracy"][a] - reference["accuracy"][a]), 1)
                               for a in row["accuracy"]}


def _draw_row(row: Row, settings: QualitySettings, pixels_path: str) -> dict[str, Any]:
    """In the row's own process: every prompt through one engine, submitted together; the images saved."""
    logging.basicConfig(level=logging.WARNING)
    prompts = row_prompts(settings)
    engine, ready_s, not_started = start_engine(row.config)
    if not_started:
        return not_started
    fields = {} if row.guidance is None else {"guidance_scale": row.guidance}
    try:
        with engine:
            started = time.perf_counter()
            futures = [engine.submit(prompt=prompt, seed=settings.seed + i, steps=row.steps, scheduler=row.scheduler,
                                     output_format="np", **fields) for i, prompt in enumerate(prompts)]
            pixels = np.concatenate([future.result().pixels for future in futures])
            wall_s = time.perf_counter() - started
            described = engine.describe()["models"][0]
    except Exception:
        return {"status": "failed", "reason": traceback.format_exc()}
    np.save(pixels_path, pixels)
    return {"status": "ok", "ready_s": round(ready_s, 2), "wall_s": round(wall_s, 2),
            "images_per_s": round(len(prompts) / wall_s, 2), "dtype": described["dtype"],
            "optimizations": described["optimizations"]}

