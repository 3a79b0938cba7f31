"""What every route shares: the server's settings and its state (the engine once loaded, the image store, the
metrics, whether it is draining). Its own module so that the app and the routes import it, not each other."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from fastapi import Request

from baton.engine import Engine
from baton.server.errors import ApiError
from baton.server.images import ImageStore
from baton.server.metrics import ServerMetrics

DRAIN_RETRY_AFTER_S = 5


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """What the HTTP layer enforces on top of the engine's own request checks."""

    api_keys: tuple[str, ...] = ()
    """Bearer tokens accepted; empty: no auth."""
    max_body_bytes: int = 1 << 20
    """Largest request body (413 beyond)."""
    max_prompt_chars: int = 2000
    """Longest prompt or negative prompt, in characters."""
    max_pixels_per_request: int = 16 * 1024 * 1024
    """Most pixels one request may ask for: images x width x height."""
    openai_steps: int = 30
    """Denoising steps of ``/v1/images/generations`` requests (OpenAI's API has no such field); capped at the
    engine's ``limits.max_steps``."""
    request_timeout_s: float = 300.0
    """Default time a request may take; past it the answer is 504 and its remaining work is dropped."""
    image_ttl_s: float = 3600.0
    """How long an image served by URL stays available."""
    image_store_bytes: int = 512 * 1024 * 1024
    """Total bytes of images kept for URLs; the oldest go first."""
    public_url: str | None = None
    """The base URL clients reach this server at (``https://images.example.com``), for image URLs. ``None``:
    image URLs are relative (``/v1/images/<id>.png``). Never taken from the request's ``Host`` header, which
    the client chooses."""
    capability_urls: bool = False
    """Image URLs work without the bearer key, like OpenAI's pre-signed URLs: whoever holds the URL (192 random
    bits, valid for ``image_ttl_s``) can fetch the image, so it can go straight into an ``<img>`` tag. Off: the
    image route needs the key like every other route."""
    stuck_after_s: float = 120.0
    """The watchdog: when requests wait and no stage has finished any work (a denoising step, a batch) for this
    long, ``/readyz`` answers 503 and ``/healthz`` says why, so a load balancer stops sending work here."""
    drain_timeout_s: float = 30.0
    """After SIGTERM, how long in-flight requests may take to finish; new work gets 503 meanwhile. Whatever is
    unfinished then is failed (its clients get an error), and the process exits."""
    header_timeout_s: float = 10.0
    """A client must send a request's headers within this time of connecting (or of its previous request), or
    the connection is closed: a trickling client cannot hold a connection open."""
    body_timeout_s: float = 30.0
    """Longest wait for the next chunk of a request body; past it the answer is 408 and the connection closes."""
    keep_alive_s: float = 5.0
    """How long an idle keep-alive connection stays open."""

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_prompt_chars", "max_pixels_per_request", "image_store_bytes",
                     "openai_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be >= 1, got {getattr(self, name)!r}")
        for name in ("request_timeout_s", "image_ttl_s", "stuck_after_s", "drain_timeout_s", "header_timeout_s",
                     "body_timeout_s", "keep_alive_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"`{name}` must be > 0, got {getattr(self, name)!r}")
        if any(not key for key in self.api_keys):
            raise ValueError("`api_keys` must not contain empty keys")
        if self.public_url is not None and not self.public_url.startswith(("http://", "https://")):
            raise ValueError(f"`public_url` must start with http:// or https://, got {self.public_url!r}")


@dataclass
class ServerState:
    """What the routes share: the engine once loaded, the settings, the URL image store."""

    config: ServerConfig
    images: ImageStore
    metrics: ServerMetrics
    engine: Engine | None = None
    load_error: BaseException | None = None
    draining_since: float | None = field(default=None)
    """``time.monotonic()`` when the shutdown signal came; ``None`` while serving."""

    @property
    def draining(self) -> bool:
        return self.draining_since is not None

    def start_draining(self) -> None:
        if self.draining_since is None:
            self.draining_since = time.monotonic()

    def ready_engine(self) -> Engine:
        """The engine, when it can take work; else a 503 saying why, with ``Retry-After``."""
        if self.engine is None or self.draining or self.engine.closed:
            reason = ("shutting down" if self.draining else f"failed to load: {self.load_error}" if self.load_error
                      else "the engine stopped" if self.engine is not None else "loading models")
            raise ApiError(503, f"the server is not ready ({reason})", type_="server_error", code="not_ready",
                           headers={"Retry-After": str(DRAIN_RETRY_AFTER_S)})
        return self.engine

    def stuck_for(self) -> float | None:
        """Seconds no stage has made progress while requests wait, once that passed ``stuck_after_s``."""
        if self.engine is None:
            return None
        idle = self.engine.health()["stalled_s"]
        return idle if idle >= self.config.stuck_after_s else None


def server_state(request: Request) -> ServerState:
    return request.app.state.baton
