"""Presets: named sets of engine options, for a device type. Nothing more than config overrides.

- ``baseline``: the engine's defaults (float16 on CUDA, float32 on a CPU; SDPA). The reference.
- ``fast``: ``baseline`` + fused QKV and a 256 MiB prompt cache; on CUDA also channels_last, compile and CUDA
  graphs over static shape buckets. Meant to keep images within 35 dB PSNR of float32 (measured by
  ``baton bench optimizations``).
- ``low-memory``: ``baseline`` + VAE slicing and tiling; on CUDA also model CPU offload.
- ``max-throughput``: ``fast`` + the tiny autoencoder + 32 denoiser rows per forward. Lossy: the tiny
  autoencoder trades detail for a much cheaper decode. It is the model's own trained one when the model folder
  has one (``vae_tiny``), else random weights: noise, for speed tests only (see ``baton.optim.vae``).

docs/optimizations.md has the table.
"""

from __future__ import annotations

import dataclasses

from baton.config import CompileConfig, EngineConfig, OptimizationConfig, PromptCacheConfig

PRESETS: tuple[str, ...] = ("baseline", "fast", "low-memory", "max-throughput")
LOSSLESS_PRESETS: tuple[str, ...] = ("baseline", "fast", "low-memory")
"""Presets whose images stay within 35 dB PSNR of float32 (checked by ``baton bench optimizations``)."""

_PROMPT_CACHE = PromptCacheConfig(max_bytes=256 * 2**20)


def preset_config(name: str, device_type: str, config: EngineConfig | None = None) -> EngineConfig:
    """``config`` (default: ``EngineConfig()``) with preset ``name``'s options for a ``cuda`` or ``cpu`` device."""
    if name not in PRESETS:
        raise ValueError(f"`preset` must be one of {PRESETS}, got {name!r}")
    config = config or EngineConfig()
    cuda = device_type == "cuda"
    denoise = config.denoise
    buckets = CompileConfig().batch_buckets
    if name == "baseline":
        options = OptimizationConfig()
    elif name == "low-memory":
        options = OptimizationConfig(offload="model" if cuda else "none", vae_slicing=True, vae_tiling=True)
    else:
        vae = None
        if name == "max-throughput":
            vae = "tiny"
            buckets = (*buckets, 24, 32)
            denoise = dataclasses.replace(denoise, max_rows=32)
        options = OptimizationConfig(
            channels_last=cuda,  # it serves tensor-core convolutions; unmeasured on a CPU, so left off there
            fuse_qkv=True,
            # On this 2-core CPU inductor's code ran the tiny SDXL UNet 1.7x slower than eager at 8 rows
            # (tiny-sdxl 128x128, 50 steps: 1.50-1.82 s against 0.83-1.07 s), so a CPU preset does not compile.
            compile=CompileConfig(enabled=cuda, batch_buckets=buckets),
            cuda_graphs=cuda,
            prompt_cache=_PROMPT_CACHE,
            vae=vae,
        )
    options = dataclasses.replace(options, preset=name)
    return dataclasses.replace(config, optimizations=options, denoise=denoise)
