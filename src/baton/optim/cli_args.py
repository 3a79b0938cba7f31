"""Command-line flags for the optimization options, shared by ``baton generate``, ``info`` and the benchmarks."""

from __future__ import annotations

import argparse
import dataclasses

from baton.config import ATTENTION_NAMES, COMPILE_MODES, OFFLOAD_NAMES, EngineConfig
from baton.optim.presets import PRESETS, preset_config


def add_optimization_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("optimizations (see docs/optimizations.md); flags apply on top of --preset")
    group.add_argument("--preset", choices=PRESETS, default=None)
    group.add_argument("--attention", choices=ATTENTION_NAMES, default=None)
    group.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                       help="torch.compile the denoiser over static shape buckets")
    group.add_argument("--compile-mode", choices=COMPILE_MODES, default=None)
    group.add_argument("--compile-cache", default=None, help="persistent compile cache folder")
    group.add_argument("--cuda-graphs", action=argparse.BooleanOptionalAction, default=None)
    group.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None)
    group.add_argument("--fuse-qkv", action=argparse.BooleanOptionalAction, default=None)
    group.add_argument("--offload", choices=OFFLOAD_NAMES, default=None)
    group.add_argument("--vae-slicing", action=argparse.BooleanOptionalAction, default=None)
    group.add_argument("--vae-tiling", action=argparse.BooleanOptionalAction, default=None)
    group.add_argument("--vae", default=None, help="tiny, taesd, taesdxl, or a VAE folder / hub id")
    group.add_argument("--prompt-cache-mb", type=int, default=None, help="prompt-embedding cache size (0: off)")


def config_from_args(args: argparse.Namespace, device_type: str, **fields) -> EngineConfig:
    """An EngineConfig from ``fields``, the preset for ``device_type``, then each optimization flag given."""
    config = EngineConfig(**fields)
    if args.preset is not None:
        config = preset_config(args.preset, device_type, config)
    opts = config.optimizations
    compile_config = opts.compile
    compile_changes = {
        name: value
        for name, value in (("mode", args.compile_mode), ("cache_dir", args.compile_cache))
        if value is not None
    }
    if compile_changes and args.compile is None:
        compile_changes["enabled"] = True  # --compile-mode or --compile-cache alone mean: compile
    elif args.compile is not None:
        compile_changes["enabled"] = args.compile
    if compile_changes:
        compile_config = dataclasses.replace(compile_config, **compile_changes)
    changes = {
        name: value
        for name, value in (
            ("attention", args.attention),
            ("cuda_graphs", args.cuda_graphs),
            ("channels_last", args.channels_last),
            ("fuse_qkv", args.fuse_qkv),
            ("offload", args.offload),
            ("vae_slicing", args.vae_slicing),
            ("vae_tiling", args.vae_tiling),
            ("vae", args.vae),
        )
        if value is not None
    }
    if args.prompt_cache_mb is not None:
        changes["prompt_cache"] = dataclasses.replace(opts.prompt_cache, max_bytes=args.prompt_cache_mb * 2**20)
    return dataclasses.replace(config, optimizations=dataclasses.replace(opts, compile=compile_config, **changes))
