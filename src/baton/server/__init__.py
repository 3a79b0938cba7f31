"""The HTTP server: an OpenAI-compatible images API and baton's native API over one engine (FastAPI, uvicorn).

Names load on first use: ``ServerConfig`` is plain data (the CLI's parser reads its defaults), while ``create_app``
brings in the engine, torch and FastAPI."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {"ServerConfig": "baton.server.settings", "create_app": "baton.server.app"}

__all__ = ["ServerConfig", "create_app"]

if TYPE_CHECKING:
    from baton.server.app import create_app
    from baton.server.settings import ServerConfig


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'baton.server' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
