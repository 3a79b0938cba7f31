"""The engine process: one :class:`~baton.Engine`, driven over a pipe by a
:class:`~baton.cluster.RemoteEngine` in the serving process.

Messages are tuples whose first item names them.

- From the serving process: ``("submit", id, request, wants_progress, preview_every, wants_accepted)``,
  ``("cancel", id)``, ``("close", drain, timeout)``.
- To it: ``("ready", resolver, described)`` or ``("load_failed", text)`` once; then ``("accepted", id,
  warnings)``, ``("started", id)`` (it joined the denoiser, before its first step), ``("progress", id, done,
  total)``, ``("preview", id, done, total, rgb)``, ``("result", id, result)`` or ``("error", id, exception)``;
  ``("status", stats, health)`` every ``STATUS_EVERY_S``; ``("closed",)`` last.

Nothing here is imported by the serving process's hot path: this module is the spawned process's entry point, and
it imports torch only after the thread settings are in the environment.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
import signal
import threading
from concurrent.futures import Future
from multiprocessing.connection import Connection

from baton.config import EngineConfig

logger = logging.getLogger(__name__)

_CLOSING_POLL_S = 0.05
STATUS_EVERY_S = 0.2
"""How often the process reports its stats and health: the router's view of its load between requests, and
its heartbeat (a process that stops reporting while it holds requests is stuck)."""


def run_engine_process(conn: Connection, config: EngineConfig, threads: int | None,
                       memory_fraction: float | None) -> None:
    """The spawned process's main: load the engine, report, then serve messages until told to close or until
    the serving process is gone (its end of the pipe closes: the engine closes too, no orphan keeps a GPU)."""
    # Ctrl-C in a terminal reaches the whole process group; the serving process decides when engines stop
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if threads is not None:  # before torch starts its pools
        for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[variable] = str(threads)
    import torch

    from baton.device import resolve_device
    from baton.engine import Engine

    if threads is not None:
        torch.set_num_threads(threads)
    link = _Link(conn)
    try:
        device = resolve_device(config.device)
        if memory_fraction is not None and device.type == "cuda":
            # before any allocation: several engine processes share the device, each within its part
            torch.cuda.set_per_process_memory_fraction(memory_fraction, device)
        engine = Engine(config)
    except BaseException as exc:
        link.send(("load_failed", f"{type(exc).__name__}: {exc}"))
        return
    _EngineProcess(engine, link).serve()


class _Link:
    """The process's end of the pipe: sends from any thread, one at a time; a gone peer is not an error here."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._lock = threading.Lock()

    def send(self, message: tuple) -> None:
        with self._lock:
            try:
                self.conn.send(message)
            except (OSError, ValueError):  # the serving process is gone; the receive loop sees it and ends
                pass


class _EngineProcess:
    def __init__(self, engine, link: _Link) -> None:
        self.engine = engine
        self.link = link
        self.futures: dict[str, Future] = {}
        self._stopped = threading.Event()

    def serve(self) -> None:
        self.link.send(("ready", self.engine.resolver, self.engine.describe()))
        threading.Thread(target=self._report, name="baton-engine-status", daemon=True).start()
        closer: threading.Thread | None = None
        try:
            # while a close drains (in its own thread) messages are still read: a client that leaves during the
            # drain has its request dropped at the next step, as in one process
            while closer is None or closer.is_alive():
                try:
                    if closer is not None and not self.link.conn.poll(_CLOSING_POLL_S):
                        continue
                    message = self.link.conn.recv()
                except (EOFError, OSError):  # the serving process is gone
                    self.engine.close(drain=False, timeout=2.0)
                    return
                kind = message[0]
                if kind == "submit":
                    self._submit(*message[1:])  # while closing, the engine refuses it: the other side hears why
                elif kind == "cancel":
                    future = self.futures.get(message[1])
                    if future is not None:
                        future.cancel()  # the engine drops its remaining work at the next step
                elif kind == "close" and closer is None:
                    closer = threading.Thread(target=self._close, args=message[1:], name="baton-engine-close")
                    closer.start()
        finally:
            self._stopped.set()

    def _close(self, drain: bool, timeout: float | None) -> None:
        self.engine.close(drain=drain, timeout=timeout)
        self.link.send(("closed",))

    def _submit(self, request_id: str, request, wants_progress: bool, preview_every: int,
                wants_accepted: bool) -> None:
        from baton.protocol import RequestEvents

        send = self.link.send
        events = RequestEvents(
            progress=(lambda done, total: send(("progress", request_id, done, total))) if wants_progress else None,
            preview=(lambda done, total, rgb: send(("preview", request_id, done, total, rgb))) if preview_every
            else None,
            preview_every=preview_every,
            accepted=(lambda warnings: send(("accepted", request_id, warnings))) if wants_accepted else None,
            denoising=lambda: send(("started", request_id)),  # always: the router's retry rule rests on it
        )
        try:
            future = self.engine.submit(request, events)
        except Exception as exc:  # refused here (full, closing): the serving process fails its future
            send(("error", request_id, _picklable(exc)))
            return
        self.futures[request_id] = future
        future.add_done_callback(lambda settled: self._finished(request_id, settled))

    def _finished(self, request_id: str, future: Future) -> None:
        self.futures.pop(request_id, None)
        if future.cancelled():  # the serving process cancelled it, and settled its own future then
            return
        error = future.exception()
        if error is not None:
            self.link.send(("error", request_id, _picklable(error)))
            return
        result = future.result()
        if result.encoded is not None or result.pixels is not None:
            result = dataclasses.replace(result, images=[])  # the bytes travel; PIL copies of them need not
        self.link.send(("result", request_id, result))

    def _report(self) -> None:
        while not self._stopped.wait(STATUS_EVERY_S):
            try:
                self.link.send(("status", self.engine.stats(), self.engine.health()))
            except Exception:  # a report is not worth the process
                logger.exception("reporting the engine's status failed")


def _picklable(error: BaseException) -> BaseException:
    """``error`` if it crosses the pipe and can be rebuilt there, else a RuntimeError with its text (a stage's
    cause may hold a tensor or a lock; an exception with a custom ``__init__`` may not unpickle)."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")
