"""The optimization toolbox: precision, attention, compile and CUDA graphs over shape buckets, memory savers, the
prompt-embedding cache, presets and profiling. ``baton.optim.apply`` is the one place they are applied."""

from baton.optim.apply import apply_optimizations, check_optimizations
from baton.optim.presets import LOSSLESS_PRESETS, PRESETS, preset_config

__all__ = ["LOSSLESS_PRESETS", "PRESETS", "apply_optimizations", "check_optimizations", "preset_config"]
