"""Beyond one engine in one process: engine processes (:class:`RemoteEngine`) and a router over several
(:class:`Router`), both behind the :class:`~baton.protocol.EngineClient` seam a server talks to."""

from baton.cluster.remote import RemoteEngine
from baton.cluster.router import EngineLoad, Router, choose_engine, parse_devices

__all__ = ["EngineLoad", "RemoteEngine", "Router", "choose_engine", "parse_devices"]
