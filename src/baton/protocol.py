"""The seam between a server and an engine: what the HTTP layer (and the benches) may ask of one.

Three things implement it and are interchangeable behind a server:

- :class:`baton.Engine`, the engine in this process;
- :class:`baton.cluster.RemoteEngine`, an engine in a process of its own, reached over a pipe;
- :class:`baton.cluster.Router`, several remote engines (one per device, or several per device) behind one front.

Everything a server reads goes through these methods: metrics read only :meth:`EngineClient.stats`. Progress,
previews and the request's warnings arrive as :class:`RequestEvents`; results carry the encoded image bytes.
No torch here.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from baton.request import GenerationRequest, GenerationResult
from baton.resolver import RequestResolver

if TYPE_CHECKING:
    import numpy as np

ProgressCallback = Callable[[int, int], None]
"""``(steps_done, steps_total)``, after each denoising step."""
PreviewCallback = Callable[[int, int, "np.ndarray"], None]
"""``(steps_done, steps_total, rgb)`` every ``preview_every`` steps, with ``rgb`` a uint8 array [n, H/8, W/8, 3]:
the latents mapped linearly to colours (no VAE)."""
AcceptedCallback = Callable[[list[str]], None]
"""``(warnings)``: the engine took the request; what it will get that it did not quite ask for."""


@dataclass(slots=True)
class RequestEvents:
    """What a caller hears about a request before its result. Callbacks run on an engine thread and must be
    quick (hand the event to your own loop)."""

    progress: ProgressCallback | None = None
    preview: PreviewCallback | None = None
    preview_every: int = 0
    """Call ``preview`` every this many steps (not at the last; the image follows)."""
    accepted: AcceptedCallback | None = None
    """Called once the engine has admitted the request (a remote engine: once its process has); never for a
    request refused at admission. Progress may overtake it (the denoiser can start before ``submit`` returns):
    a caller that waits for it keeps what arrives first."""
    denoising: Callable[[], None] | None = None
    """Called once, when the request joins the denoiser, before its first step: from then on a crash of its
    engine may be the request's own doing, so a router does not send it elsewhere."""

    def __post_init__(self) -> None:
        if self.preview is not None and self.preview_every < 1:
            raise ValueError(f"`preview_every` must be >= 1 when a preview callback is given, got "
                             f"{self.preview_every!r}")


@dataclass(frozen=True, slots=True)
class EngineHealth:
    """What the watchdog reads (:meth:`EngineClient.health`)."""

    pending: int
    """Requests admitted and not settled."""
    stalled_s: float
    """How long the engine has been stuck: the age of the longest piece of work still running (a denoising step,
    a batch; also one left running for a request that timed out), or, while requests wait, the time since any
    worker last finished anything. 0 when idle or moving."""
    dead: bool
    """The engine serves nothing more."""


@runtime_checkable
class EngineClient(Protocol):
    """An engine as a server sees it (see the module docstring)."""

    resolver: RequestResolver
    """The loaded models' defaults and limits: requests are resolved and checked with it before any work."""

    @property
    def ready(self) -> bool:
        """It takes new work now (a router: at least one of its engines does)."""

    @property
    def closed(self) -> bool: ...

    @property
    def dead(self) -> bool:
        """It will never serve again (a router restarts its engines, so it is never dead while open)."""

    @property
    def pending(self) -> int:
        """Requests admitted and not yet settled."""

    def resolve(self, request: GenerationRequest | None = None, /, **fields: Any) -> GenerationRequest: ...

    def submit(self, request: GenerationRequest, events: RequestEvents | None = None) -> Future[GenerationResult]:
        """Admit ``request`` (resolved or not); raises on bad input or a full engine, before any work."""

    def cancel(self, future: Future) -> bool:
        """Drop a submitted request's remaining work at its next step; ``True`` only for the call that cancelled
        it (each cancellation is counted once)."""

    def health(self) -> EngineHealth: ...

    def stats(self) -> dict[str, Any]:
        """What is in flight now (cheap, any thread): ``pending``, ``queued_pixel_steps``, ``queued`` per stage,
        ``denoising``, ``prompt_cache`` per model, ``memory`` (device and bytes); a router adds ``engines``."""

    def describe(self) -> dict[str, Any]: ...

    def close(self, drain: bool = True, timeout: float | None = None) -> None: ...


def cancel_future(future: Future) -> bool:
    """Cancel ``future``; ``True`` only for the call that cancelled it (``Future.cancel`` also answers ``True``
    for a future cancelled before)."""
    return not future.cancelled() and future.cancel()
