"""The HTTP server: an OpenAI-compatible images API and baton's native API over one engine (FastAPI, uvicorn)."""

from baton.server.app import ServerConfig, create_app

__all__ = ["ServerConfig", "create_app"]
