"""The optimization toolbox: precision, attention, compile and CUDA graphs over shape buckets, memory savers, the
prompt-embedding cache, presets and profiling. ``baton.optim.apply`` is the one place they are applied.

Names load on first use: the CLI imports ``baton.optim.cli_args`` to build its parser, and that must not import
torch (``baton --help`` answers in a fraction of a second)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from baton._lazy import lazy_getattr

_EXPORTS = {
    "apply_optimizations": "baton.optim.apply",
    "check_optimizations": "baton.optim.apply",
    "LOSSLESS_PRESETS": "baton.optim.presets",
    "PRESETS": "baton.optim.presets",
    "preset_config": "baton.optim.presets",
}

__all__ = ["LOSSLESS_PRESETS", "PRESETS", "apply_optimizations", "check_optimizations", "preset_config"]

if TYPE_CHECKING:
    from baton.optim.apply import apply_optimizations, check_optimizations
    from baton.optim.presets import LOSSLESS_PRESETS, PRESETS, preset_config


__getattr__ = lazy_getattr(__name__, _EXPORTS, globals())
