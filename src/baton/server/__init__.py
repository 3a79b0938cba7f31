"""The HTTP server: an OpenAI-compatible images API and baton's native API over one engine (FastAPI, uvicorn)."""

from baton.server.app import create_app
from baton.server.state import ServerConfig

__all__ = ["ServerConfig", "create_app"]
