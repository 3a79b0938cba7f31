"""``baton bench optimizations``: the SDXL optimization write-up's table, reproduced with baton's engine.

Each configuration (fp32 with the classic attention; half precision; + SDPA; + compile; + offload; + VAE slicing;
+ precomputed text embeddings; + the tiny autoencoder; each preset) runs in a fresh process, so peak memory is
its own (device memory on CUDA, peak RSS on a CPU) and no CPU thread pool is shared between rows. Each runs
``iterations`` generations of ``images`` images from one prompt and seed; the last one's latency is reported, and
its images are compared with the first row's (float32, the reference): PSNR in dB and max abs difference on pixels
in [0, 1]. Two stacked rows run the plain diffusers pipeline in the same run, as the baseline. A row that cannot
apply on the device (offload on a CPU, say) is reported as skipped, with the engine's own refusal as the reason.

The last iteration also gives the UNet's and the VAE decoder's own time (``baton.bench.probe``: the same hooks
for the stacked rows and baton's; CUDA event time on a GPU). A float32 row on CUDA runs with TF32 off, so the
reference is float32 indeed; each row records the TF32 switches its process ran with.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import tempfile
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from baton.bench.image_metrics import psnr_db
from baton.bench.isolation import memory_snapshot, peak_rss_bytes, refusal, run_isolated, start_engine
from baton.bench.machine import describe_machine, strict_float32, tf32_settings
from baton.config import CompileConfig, EngineConfig, OptimizationConfig, PromptCacheConfig
from baton.optim.presets import LOSSLESS_PRESETS, PRESETS, preset_config
from baton.stage_names import DENOISE, TEXT_ENCODE, VAE_DECODE

logger = logging.getLogger(__name__)

PROMPT = "a majestic lion jumping from a big stone at night"  # the write-up's prompt
LOSSLESS_PSNR_DB = 35.0


@dataclass(frozen=True, slots=True)
class OptimizationSettings:
    model: str = "tiny-sdxl"
    images: int = 4
    steps: int = 50
    width: int | None = None
    height: int | None = None
    device: str = "auto"
    half: str = "auto"
    """The half precision of the table's rows: ``auto`` is float16 on CUDA, bfloat16 on a CPU."""
    iterations: int = 3
    seed: int = 0
    only: tuple[str, ...] = ()
    """Run only the rows of these exact names (the reference row always runs). Row names hold commas, so the
    comma-separated parts of ``--only`` are joined back where they make a name (see :func:`select_rows`)."""
    compile_cache: str | None = None
    reference: bool = True
    """Run the float32 reference row (the PSNR column's images); without it that column is empty."""
    timeout_s: float = 3600.0
    profile: str | None = None
    """The ``--profile`` that set the defaults, recorded for the reader."""

    def __post_init__(self) -> None:
        for name in ("images", "steps", "iterations"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be >= 1, got {getattr(self, name)!r}")


@dataclass(frozen=True, slots=True)
class Row:
    name: str
    config: EngineConfig
    kind: str  # "reference", "baseline" (stacked diffusers), "option", "restart", "preset"


REFERENCE_ROW = "fp32, classic attention"


def half_dtype(half: str, device_type: str) -> str:
    """The rows' half precision: ``auto`` is float16 on CUDA, bfloat16 on a CPU."""
    return half if half != "auto" else ("float16" if device_type == "cuda" else "bfloat16")


def short_dtype(dtype: str) -> str:
    return {"float16": "fp16", "bfloat16": "bf16", "float32": "fp32"}[dtype]


def gpu_profile(half: str = "auto", device: str = "auto") -> dict[str, Any]:
    """``--profile gpu``: a short, budgeted GPU table (explicit flags override each value). SDXL at 1024x1024,
    1 image, 30 steps, 2 iterations; rows: the float32 reference (about 10 s an iteration on an H200, TF32 off),
    the plain diffusers pipeline and baton in half precision with SDPA. The compiled rows are left for a run of
    their own (``--only "fp16 + SDPA + compile,fp16 + SDPA + compile (restart, warm cache)"``)."""
    from baton.device import resolve_device

    short = short_dtype(half_dtype(half, resolve_device(device).type))
    return {"model": "sdxl-random", "size": (1024, 1024), "images": 1, "steps": 30, "iterations": 2,
            "only": (f"diffusers {short} + SDPA (stacked)", f"{short} + SDPA")}


def table_rows(settings: OptimizationSettings, device_type: str) -> list[Row]:
    """The write-up's configurations, then the presets (or those ``settings.only`` names), each an EngineConfig
    for this device."""
    from baton.models.registry import runner_class

    half = half_dtype(settings.half, device_type)
    short = short_dtype(half)
    family = runner_class(settings.model)
    guided = family is None or family.negative_branch  # Flux runs one row per image whatever its guidance
    rows_per_forward = settings.images * (2 if guided else 1)
    size = (settings.width, settings.height) if settings.width and settings.height else None
    # compiled for this table's one shape only: every other bucket would add a compile and measure nothing
    compile_here = CompileConfig(enabled=True, batch_buckets=(rows_per_forward,), sizes=(size,) if size else (),
                                 cache_dir=settings.compile_cache)
    base = EngineConfig(models=(settings.model,), device=settings.device,
                        denoise=dataclasses.replace(EngineConfig().denoise, max_rows=max(16, rows_per_forward)))
    sdpa = OptimizationConfig()
    # joint attention (SD3, Flux) has no classic processor: its fp32 reference and baseline use SDPA
    joint = family is not None and family.joint_attention
    classic = sdpa if joint else OptimizationConfig(attention="classic")
    fp32 = "fp32 + SDPA" if joint else REFERENCE_ROW
    cuda = device_type == "cuda"

    def engine(name: str, dtype: str, options: OptimizationConfig, kind: str = "option", mode: str = "staged"):
        return Row(name, dataclasses.replace(base, dtype=dtype, optimizations=options, mode=mode), kind)

    rows = [
        engine(fp32, "float32", classic, kind="reference"),
        engine(f"diffusers {fp32} (stacked)", "float32", classic, kind="baseline", mode="stacked"),
        engine(f"diffusers {short} + SDPA (stacked)", half, sdpa, kind="baseline", mode="stacked"),
        *([] if joint else [engine(f"{short}, classic attention", half, classic)]),
        engine(f"{short} + SDPA", half, sdpa),
        engine(f"{short} + SDPA + compile", half, dataclasses.replace(sdpa, compile=compile_here)),
        # the same engine started again: its ready time is a restart's with the compile cache warm
        engine(f"{short} + SDPA + compile (restart, warm cache)", half, dataclasses.replace(sdpa, compile=compile_here),
               kind="restart"),
        engine(f"{short} + SDPA + model offload", half, dataclasses.replace(sdpa, offload="model")),
        engine(f"{short} + SDPA + sequential offload", half, dataclasses.replace(sdpa, offload="sequential")),
        engine(f"{short} + SDPA + VAE slicing", half, dataclasses.replace(sdpa, vae_slicing=True)),
        engine(f"{short} + SDPA + VAE slicing + sequential offload", half,
               dataclasses.replace(sdpa, vae_slicing=True, offload="sequential")),
        engine(f"{short} + SDPA + precomputed text embeddings", half, dataclasses.replace(
            sdpa, prompt_cache=PromptCacheConfig(max_bytes=64 * 2**20, precompute=(PROMPT,),
                                                 text_encoders_on_cpu=cuda))),
        engine(f"{short} + SDPA + tiny autoencoder", half, dataclasses.replace(sdpa, vae="tiny")),
    ]
    rows += [Row(f"preset {name}", config, "preset") for name, config in preset_configs(base, device_type,
                                                                                        compile_here).items()]
    rows = select_rows(rows, settings.only) if settings.only else rows
    return rows if settings.reference else [row for row in rows if row.kind != "reference"]


def select_rows(rows: list[Row], only: tuple[str, ...]) -> list[Row]:
    """The reference row and the rows named in ``only``, in table order. Names may hold commas ("fp16, classic
    attention"): consecutive parts are joined back with ", " where they make a name, the longest first."""
    names = [row.name for row in rows]
    parts = [part.strip() for part in only if part.strip()]
    chosen, unknown, i = set(), [], 0
    while i < len(parts):
        for j in range(len(parts), i, -1):
            if ", ".join(parts[i:j]) in names:
                chosen.add(", ".join(parts[i:j]))
                i = j
                break
        else:
            unknown.append(parts[i])
            i += 1
    if unknown:
        valid = "\n".join(f"  {name}" for name in names)
        raise ValueError(f"`--only` names no row {unknown}; the rows on this device (exact names, comma-separated; "
                         f"the reference always runs):\n{valid}")
    return [row for row in rows if row.kind == "reference" or row.name in chosen]


def preset_configs(base: EngineConfig, device_type: str, compiled: CompileConfig) -> dict[str, EngineConfig]:
    """Each preset applied to ``base``; a preset that compiles does so over a bench's ``compiled`` buckets (its
    own mode and VAE choice kept), so a table compiles only the shapes it runs."""
    configs = {}
    for preset in PRESETS:
        config = preset_config(preset, device_type, base)
        options = config.optimizations
        if options.compile.enabled:
            options = dataclasses.replace(options, compile=dataclasses.replace(
                compiled, mode=options.compile.mode, vae=options.compile.vae))
        configs[preset] = dataclasses.replace(config, optimizations=options)
    return configs


def run_optimizations(settings: OptimizationSettings, log=logger.info) -> dict:
    """Run every row in its own process; return the report (settings, machine, results)."""
    import torch

    from baton.device import resolve_device

    device = resolve_device(settings.device)
    rows = table_rows(settings, device.type)  # an unknown `--only` name fails here, before any row runs
    results: list[dict[str, Any]] = []
    reference: np.ndarray | None = None
    with tempfile.TemporaryDirectory(prefix="baton-bench-") as scratch:
        for index, row in enumerate(rows):
            log(f"[{index + 1}/{len(rows)}] {row.name}")
            pixels_path = Path(scratch) / f"{index}.npy"
            reason = refusal(row.config, device)
            result = ({"status": "skipped", "reason": reason} if reason else
                      run_isolated(_measure_row, row.config, settings, str(pixels_path), timeout_s=settings.timeout_s))
            result.update(config=row.name, kind=row.kind, mode=row.config.mode)
            if result["status"] == "ok":
                pixels = np.load(pixels_path)
                if row.kind == "reference":
                    reference = pixels
                if reference is not None:  # without the reference row's images there is nothing to compare with
                    result.update(image_distance(reference, pixels))
                else:
                    result.update(psnr_db=None, max_abs_diff=None)
                log(f"    {result['latency_s']:.3f} s, {result['peak_memory_gb']:.2f} GB peak, "
                    f"PSNR {_db(result['psnr_db'])}")
            else:
                log(f"    {result['status']}: {result['reason'].splitlines()[0]}")
            results.append(result)
    add_speedups(results)
    return {
        "benchmark": "optimizations",
        "settings": {**asdict(settings), "prompt": PROMPT, "device": str(device), "rows": [row.name for row in rows],
                     "lossless_presets": list(LOSSLESS_PRESETS), "lossless_psnr_db": LOSSLESS_PSNR_DB},
        "machine": describe_machine(str(device)),
        "results": results,
        "torch": torch.__version__,
    }


def image_distance(reference: np.ndarray, pixels: np.ndarray) -> dict[str, float | None]:
    """PSNR (dB, peak 1.0; ``None`` when identical) and max abs difference of pixels in [0, 1]."""
    psnr = psnr_db(reference, pixels)
    difference = np.abs(reference.astype(np.float64) - pixels.astype(np.float64))
    return {"psnr_db": None if psnr is None else round(psnr, 2), "max_abs_diff": round(float(difference.max()), 6)}


def add_speedups(results: list[dict]) -> None:
    """Each row's speed-up over the float32 reference and over the stacked half-precision SDPA baseline."""
    ok = [r for r in results if r["status"] == "ok"]
    reference = next((r for r in ok if r["kind"] == "reference"), None)
    baseline = next((r for r in ok if r["kind"] == "baseline" and "SDPA" in r["config"]), None)
    for row in results:
        if row["status"] != "ok":
            row["vs_fp32"] = row["vs_stacked_sdpa"] = None
            continue
        row["vs_fp32"] = round(reference["latency_s"] / row["latency_s"], 2) if reference else None
        row["vs_stacked_sdpa"] = round(baseline["latency_s"] / row["latency_s"], 2) if baseline else None


def _measure_row(config: EngineConfig, settings: OptimizationSettings, pixels_path: str) -> dict[str, Any]:
    """In the row's own process: build the engine, generate ``iterations`` times (the UNet and the VAE decoder
    timed in the last), save the last images."""
    import torch

    from baton.bench.probe import ComponentProbe
    from baton.device import resolve_device, resolve_dtype

    logging.basicConfig(level=logging.WARNING)
    rss_at_start = peak_rss_bytes()
    try:
        device = resolve_device(config.device)
        strict_float32(resolve_dtype(config.dtype, device), device)  # before the engine builds anything
    except ValueError:
        pass  # the engine gives the same error, as a skipped row
    engine, ready_s, not_started = start_engine(config)
    if not_started:
        return {**not_started, "tf32": tf32_settings()}
    try:
        with engine:
            cuda = engine.device.type == "cuda"
            if cuda:
                torch.cuda.reset_peak_memory_stats(engine.device)
            latencies = []
            # hooks on the UNet for the plain pipeline only; baton's stages call the (maybe compiled) denoiser
            probe = ComponentProbe(engine.runners[engine.default_model], hook_unet=config.mode == "stacked")
            for iteration in range(settings.iterations):
                last = iteration == settings.iterations - 1
                with probe if last else contextlib.nullcontext():
                    result = engine.generate(prompt=PROMPT, num_images=settings.images, steps=settings.steps,
                                             seed=settings.seed, width=settings.width, height=settings.height,
                                             output_format="np")
                latencies.append(round(result.latency_s, 4))
            if cuda:
                torch.cuda.synchronize(engine.device)  # every span's events complete
            components = component_times(probe.take(), cuda)
            described = engine.describe()["models"][0]
            np.save(pixels_path, result.pixels)
            memory = memory_snapshot(engine.device)
            if cuda:
                peak = torch.cuda.max_memory_allocated(engine.device)
                model_memory = peak
            else:
                peak = peak_rss_bytes()
                model_memory = peak - rss_at_start
    except Exception:
        return {"status": "failed", "reason": traceback.format_exc(), "tf32": tf32_settings()}
    return {
        "status": "ok",
        "latency_s": latencies[-1],
        "latencies_s": latencies,
        "median_latency_s": float(np.median(latencies)),
        "peak_memory_gb": round(peak / 1e9, 3),
        "memory_over_start_gb": round(model_memory / 1e9, 3),
        "memory_measure": "cuda max_memory_allocated" if cuda else "peak RSS of the process",
        **memory,
        **components,
        "tf32": tf32_settings(),
        "ready_s": round(ready_s, 2),
        "warmup_s": described["warmup_s"],
        "dtype": described["dtype"],
        "optimizations": described["optimizations"],
        "timings_s": {stage: round(t.run_s, 4) for stage, t in result.timings.items()},
    }


def component_times(spans, cuda: bool) -> dict[str, Any]:
    """The last iteration's time in the UNet, the VAE decoder and the text encoders, summed over their calls."""
    def total(component: str) -> float:
        return round(sum(span.seconds for span in spans if span.component == component), 4)

    return {"unet_s": total(DENOISE), "vae_decode_s": total(VAE_DECODE), "text_encode_s": total(TEXT_ENCODE),
            "unet_forwards": sum(span.component == DENOISE for span in spans),
            "component_clock": "cuda-events" if cuda else "cpu-wall"}


def _db(value: float | None) -> str:
    return "identical" if value is None else f"{value:.1f} dB"
