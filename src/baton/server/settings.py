"""The HTTP server's settings: what it enforces on top of the engine's own request checks. Plain data, no torch
or FastAPI, so that the CLI's parser can show the defaults without importing either."""

from __future__ import annotations

from dataclasses import dataclass


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
    """The watchdog: when a piece of work (a denoising step, a batch) has run this long, or requests have waited
    this long while no stage finished anything, ``/readyz`` answers 503 and ``/healthz`` says why, so a load
    balancer stops sending work here (see ``Engine.health``)."""
    drain_timeout_s: float = 30.0
    """After SIGTERM, how long in-flight requests may take to finish; new work gets 503 meanwhile. Whatever is
    unfinished then is failed (its clients get an error), and the process exits."""
    header_timeout_s: float = 10.0
    """A client must send a request's headers within this time of connecting (or of its previous request), or
    the connection is closed: a trickling client cannot hold a connection open."""
    body_timeout_s: float = 30.0
    """How long a request's whole body may take to arrive (from when the app first reads it); past it the answer
    is 408 and the connection closes. Whole, not per chunk: a byte now and then would otherwise do."""
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
