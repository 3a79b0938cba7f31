"""What every route shares: the server's state (its settings, the engine once loaded, the image store, the
metrics, whether it is draining). Its own module so that the app and the routes import it, not each other."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import Request

from baton.protocol import EngineClient
from baton.server.errors import RETRY_AFTER_UNAVAILABLE_S, ApiError
from baton.server.images import ImageStore
from baton.server.metrics import ServerMetrics
from baton.server.settings import ServerConfig

STATIC_DIR = Path(__file__).parent / "static"
"""The playground, the favicon."""


@dataclass
class ServerState:
    """What the routes share: the engine once loaded, the settings, the URL image store."""

    config: ServerConfig
    images: ImageStore
    metrics: ServerMetrics
    engine: EngineClient | None = None
    """The in-process engine, or a router over engine processes (``baton serve --devices``)."""
    load_error: BaseException | None = None
    draining_since: float | None = field(default=None)
    """``time.monotonic()`` when the shutdown signal came; ``None`` while serving."""

    @property
    def draining(self) -> bool:
        return self.draining_since is not None

    def start_draining(self) -> None:
        if self.draining_since is None:
            self.draining_since = time.monotonic()

    def ready_engine(self) -> EngineClient:
        """The engine, when it can take work; else a 503 saying why, with ``Retry-After``."""
        if self.engine is None or self.draining or not self.engine.ready:
            reason = ("shutting down" if self.draining else f"failed to load: {self.load_error}" if self.load_error
                      else "loading models" if self.engine is None
                      else "the engine stopped" if self.engine.closed or self.engine.dead
                      else "no engine process is ready: starting or restarting")
            # while draining, a keep-alive client is told to reconnect: to another replica, behind a balancer
            headers = {"Retry-After": str(RETRY_AFTER_UNAVAILABLE_S), **({"Connection": "close"} if self.draining
                                                                          else {})}
            raise ApiError(503, f"the server is not ready ({reason})", type_="server_error", code="not_ready",
                           headers=headers)
        return self.engine

    def stuck_for(self) -> float | None:
        """``health().stalled_s``, once it passed ``stuck_after_s``."""
        if self.engine is None:
            return None
        idle = self.engine.health().stalled_s
        return idle if idle >= self.config.stuck_after_s else None


def server_state(request: Request) -> ServerState:
    return request.app.state.baton
