"""Beyond one engine in one process: engine processes (:class:`RemoteEngine`) and a router over several
(:class:`Router`), both behind the :class:`~baton.protocol.EngineClient` seam a server talks to.

Names load on first use: an engine process imports ``baton.cluster.worker`` before torch, and torch must start
after the thread settings are in its environment."""

from __future__ import annotations

from typing import TYPE_CHECKING

from baton._lazy import lazy_getattr

_EXPORTS = {
    "RemoteEngine": "baton.cluster.remote",
    "Router": "baton.cluster.router",
    "EngineLoad": "baton.cluster.router",
    "choose_engine": "baton.cluster.router",
    "parse_devices": "baton.cluster.router",
}
__all__ = ["EngineLoad", "RemoteEngine", "Router", "choose_engine", "parse_devices"]

if TYPE_CHECKING:
    from baton.cluster.remote import RemoteEngine
    from baton.cluster.router import EngineLoad, Router, choose_engine, parse_devices

__getattr__ = lazy_getattr(__name__, _EXPORTS, globals())
