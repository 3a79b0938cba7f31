"""baton: a staged, step-batched serving engine for text-to-image diffusion models.

The public API is what ``__all__`` lists. Names load on first use, so ``import baton`` (and the CLI's start) stays
quick and torch/diffusers are imported only when something needs them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from baton._lazy import lazy_getattr

__version__ = "0.1.0"

_EXPORTS = {
    "Engine": "baton.engine",
    "EngineConfig": "baton.config",
    "DenoiseConfig": "baton.config",
    "RequestLimits": "baton.config",
    "StageConfig": "baton.config",
    "OptimizationConfig": "baton.config",
    "CompileConfig": "baton.config",
    "PromptCacheConfig": "baton.config",
    "preset_config": "baton.optim.presets",
    "PRESETS": "baton.optim.presets",
    "GenerationRequest": "baton.request",
    "GenerationResult": "baton.request",
    "StageTiming": "baton.request",
    "BatonError": "baton.errors",
    "EngineClosedError": "baton.errors",
    "EngineDeadError": "baton.errors",
    "EngineProcessLostError": "baton.errors",
    "InvalidRequestError": "baton.errors",
    "QueueFullError": "baton.errors",
    "RequestError": "baton.errors",
    "StageError": "baton.errors",
    "EngineClient": "baton.protocol",
    "RequestEvents": "baton.protocol",
    "Router": "baton.cluster",
    "RemoteEngine": "baton.cluster",
}

__all__ = [*_EXPORTS, "__version__"]

if TYPE_CHECKING:
    from baton.cluster import RemoteEngine, Router
    from baton.config import (
        CompileConfig,
        DenoiseConfig,
        EngineConfig,
        OptimizationConfig,
        PromptCacheConfig,
        RequestLimits,
        StageConfig,
    )
    from baton.engine import Engine
    from baton.errors import (
        BatonError,
        EngineClosedError,
        EngineDeadError,
        EngineProcessLostError,
        InvalidRequestError,
        QueueFullError,
        RequestError,
        StageError,
    )
    from baton.optim.presets import PRESETS, preset_config
    from baton.protocol import EngineClient, RequestEvents
    from baton.request import GenerationRequest, GenerationResult, StageTiming


__getattr__ = lazy_getattr(__name__, _EXPORTS, globals())
