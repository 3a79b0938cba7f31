"""The HTTP server: an OpenAI-compatible images API and baton's native API over one engine (FastAPI, uvicorn).

Names load on first use: ``ServerConfig`` is plain data (the CLI's parser reads its defaults), while ``create_app``
brings in the engine, torch and FastAPI."""

from __future__ import annotations

from typing import TYPE_CHECKING

from baton._lazy import lazy_getattr

_EXPORTS = {"ServerConfig": "baton.server.settings", "create_app": "baton.server.app"}

__all__ = ["ServerConfig", "create_app"]

if TYPE_CHECKING:
    from baton.server.app import create_app
    from baton.server.settings import ServerConfig


__getattr__ = lazy_getattr(__name__, _EXPORTS, globals())
