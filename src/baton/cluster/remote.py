"""An engine in a process of its own, reached over a pipe: :class:`RemoteEngine`.

The transport is a ``multiprocessing`` pipe between this process and a spawned one (docs/architecture.md says
why not ZeroMQ). This side keeps the books the router balances on (each request's pixel-steps, from the moment
it is sent) and turns the process's messages (see :mod:`baton.cluster.worker`) back into futures and events. When
the process dies, every request it held fails with :class:`~baton.EngineProcessLostError`, saying whether it had
started denoising; the router decides what to retry.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from typing import Any

from baton.cluster.worker import run_engine_process
from baton.config import EngineConfig
from baton.errors import EngineClosedError, EngineProcessLostError, QueueFullError
from baton.protocol import EngineHealth, RequestEvents, cancel_future
from baton.request import GenerationRequest, GenerationResult, pixel_steps
from baton.resolver import RequestResolver

logger = logging.getLogger(__name__)

STATUS_STALE_S = 2.0
"""A process that holds requests and has not reported for this long counts as stalled from then on (hung in
native code with the GIL held, stopped): its heartbeat comes every ``worker.STATUS_EVERY_S``."""
CLOSE_MARGIN_S = 5.0
"""After a close's own timeout, how long the process gets to answer and exit before it is terminated."""


@dataclass(slots=True)
class _Sent:
    """A request this side sent and has not seen settled."""

    future: Future
    events: RequestEvents | None
    work: int
    started: bool = False
    """The process said the request joined its denoiser (the ``started`` message)."""


class RemoteEngine:
    """An :class:`~baton.Engine` in a spawned process, behind the :class:`~baton.protocol.EngineClient` seam.

    Args:
        config: the engine's settings (its ``device`` is where this process runs).
        name: how logs, stats and metrics call it (``"0:cuda:0"``).
        threads: intra-op threads of the process (``torch.set_num_threads``); ``None``: torch's default.
        memory_fraction: the share of its CUDA device this process may allocate
            (``torch.cuda.set_per_process_memory_fraction``), for several engines on one device.
        on_exit: called (from a reader thread) when the process ends without being closed: died or failed to
            load.

    Construction starts the process and returns; :meth:`wait_ready` waits for its models.
    """

    def __init__(self, config: EngineConfig, *, name: str = "0", threads: int | None = None,
                 memory_fraction: float | None = None,
                 on_exit: Callable[[RemoteEngine], None] | None = None) -> None:
        self.config = config
        self.name = name
        self.resolver: RequestResolver | None = None
        self.load_error: str | None = None
        self.state = "starting"
        """starting, ready, closing, closed, dead (the process died) or failed (it could not load)."""
        self.started_at = time.monotonic()
        self.ready_at: float | None = None
        self._on_exit = on_exit
        self._described: dict[str, Any] = {}
        self._sent: dict[str, _Sent] = {}
        self._work = 0
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._ready = threading.Event()
        self._status: tuple[dict, EngineHealth] | None = None
        self._status_at = 0.0
        context = multiprocessing.get_context("spawn")  # fork would copy this process's threads and CUDA state
        self._conn, child_end = context.Pipe(duplex=True)
        self._process = context.Process(target=run_engine_process, name=f"baton-engine-{name}", daemon=True,
                                        args=(child_end, config, threads, memory_fraction))
        self._process.start()
        child_end.close()  # the child's copy keeps it open; ours must not, or its death would go unnoticed
        self.pid = self._process.pid
        threading.Thread(target=self._read, name=f"baton-remote-{name}", daemon=True).start()

    # -- state ----------------------------------------------------------------------------------------------------
    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until the process has loaded its models (``True``), failed or died (``False``)."""
        self._ready.wait(timeout)
        return self.state == "ready"

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    @property
    def closed(self) -> bool:
        return self.state in ("closing", "closed")

    @property
    def dead(self) -> bool:
        return self.state in ("dead", "failed")

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._sent)

    @property
    def queued_pixel_steps(self) -> int:
        """The work sent and not settled: what the router balances on."""
        with self._lock:
            return self._work

    @property
    def alive(self) -> bool:
        return self._process.is_alive()

    # -- the seam -------------------------------------------------------------------------------------------------
    def resolve(self, request: GenerationRequest | None = None, /, **fields: Any) -> GenerationRequest:
        return self._resolver().resolve(request, **fields)

    def submit(self, request: GenerationRequest, events: RequestEvents | None = None) -> Future[GenerationResult]:
        """Check ``request`` here, count it, and send it; bad input and a full engine raise before it is sent."""
        request = self._resolver().resolve(request)
        work = pixel_steps(request)
        request_id = uuid.uuid4().hex
        future: Future[GenerationResult] = Future()
        limit, max_queue = self._described["max_queued_pixel_steps"], self._described["max_queue"]
        with self._lock:  # the process's own admission, from this side's books, so a refusal is synchronous
            if self.state != "ready":  # checked under the lock the reader takes when the process is gone
                raise EngineClosedError(f"engine process {self.name} is {self.state}")
            if len(self._sent) >= max_queue:
                raise QueueFullError(f"engine process {self.name} holds {len(self._sent)} requests, its limit "
                                     "(`max_queue`); retry later")
            if self._work and self._work + work > limit:
                raise QueueFullError(f"engine process {self.name} holds {self._work:.3g} pixel-steps of work and "
                                     f"this request adds {work:.3g}; the limit is {limit:.3g} "
                                     "(`max_queued_pixel_steps`); retry later")
            self._sent[request_id] = _Sent(future, events, work)
            self._work += work
        future.add_done_callback(lambda settled: self._settled(request_id, settled))
        wants_preview = events is not None and events.preview is not None
        message = ("submit", request_id, request, events is not None and events.progress is not None,
                   events.preview_every if wants_preview else 0, events is not None and events.accepted is not None)
        if not self._send(message):
            self._fail(request_id, EngineProcessLostError(f"engine process {self.name} is gone", started=False))
        return future

    def cancel(self, future: Future) -> bool:
        return cancel_future(future)  # its done callback tells the process

    def health(self) -> EngineHealth:
        pending = self.pending
        if self.state != "ready":
            return EngineHealth(pending=pending, stalled_s=0.0, dead=self.dead)
        status = self._status
        stalled = status[1].stalled_s if status is not None else 0.0
        silent = time.monotonic() - (self._status_at or self.ready_at or time.monotonic())
        if pending and silent > STATUS_STALE_S:  # no heartbeat: the process cannot even report
            stalled = max(stalled, silent)
        return EngineHealth(pending=pending, stalled_s=stalled, dead=False)

    def stats(self) -> dict[str, Any]:
        """The process's last report, with this side's counts of what it holds (they include requests on their
        way)."""
        status = self._status
        reported = status[0] if status is not None else {}
        with self._lock:
            pending, work = len(self._sent), self._work
        return {
            "pending": pending,
            "queued_pixel_steps": work,
            "queued": reported.get("queued", {}),
            "denoising": reported.get("denoising"),
            "prompt_cache": reported.get("prompt_cache", {}),
            "memory": reported.get("memory"),
        }

    def describe(self) -> dict[str, Any]:
        return {**self._described, "engine": self.name, "pid": self.pid}

    def close(self, drain: bool = True, timeout: float | None = None) -> None:
        """Close the process's engine (finishing or failing what it holds, as :meth:`Engine.close`), then end
        the process; whatever it never answered fails with :class:`~baton.EngineClosedError`. A second call
        waits for the first (at most ``timeout`` and the margin)."""
        with self._lock:
            previous = self.state
            if previous not in ("closing", "closed"):
                self.state = "closing"
        if previous in ("closing", "closed"):
            self._process.join(None if timeout is None else timeout + CLOSE_MARGIN_S)
            return
        if previous == "ready" and self._send(("close", drain, timeout)):
            self._process.join(None if timeout is None else timeout + CLOSE_MARGIN_S)
        self._end_process()
        self.state = "closed"
        self._fail_all(lambda _: EngineClosedError())

    def _end_process(self) -> None:
        if self._process.is_alive():  # loading still, not answering, or its pipe broke while it runs
            self._process.terminate()
            self._process.join(CLOSE_MARGIN_S)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()

    def kill(self) -> None:
        """``SIGKILL`` the process, as the OOM killer would (tests and the kill bench)."""
        if self._process.pid is not None and self._process.is_alive():
            self._process.kill()

    # -- the pipe -------------------------------------------------------------------------------------------------
    def _resolver(self) -> RequestResolver:
        if self.resolver is None:
            raise EngineClosedError(f"engine process {self.name} is {self.state}")
        return self.resolver

    def _send(self, message: tuple) -> bool:
        with self._send_lock:
            try:
                self._conn.send(message)
                return True
            except (OSError, ValueError):  # the process is gone; the reader fails what it held
                return False

    def _read(self) -> None:
        try:
            while True:
                self._handle(self._conn.recv())
        except (EOFError, OSError):
            pass
        except Exception:
            logger.exception("engine process %s: a message could not be handled; dropping the connection", self.name)
        self._gone()

    def _handle(self, message: tuple) -> None:
        kind = message[0]
        if kind == "status":
            self._status, self._status_at = (message[1], message[2]), time.monotonic()
        elif kind == "started":
            sent = self._sent.get(message[1])
            if sent is not None:
                sent.started = True
                if sent.events is not None and sent.events.denoising is not None:
                    _call(sent.events.denoising)
        elif kind == "progress":
            sent = self._sent.get(message[1])
            if sent is not None and sent.events is not None and sent.events.progress is not None:
                _call(sent.events.progress, message[2], message[3])
        elif kind == "preview":
            sent = self._sent.get(message[1])
            if sent is not None and sent.events is not None and sent.events.preview is not None:
                _call(sent.events.preview, message[2], message[3], message[4])
        elif kind == "accepted":
            sent = self._sent.get(message[1])
            if sent is not None and sent.events is not None and sent.events.accepted is not None:
                _call(sent.events.accepted, message[2])
        elif kind == "result":
            sent = self._sent.get(message[1])
            if sent is not None:
                set_result(sent.future, message[2])
        elif kind == "error":
            self._fail(message[1], message[2])
        elif kind == "ready":
            self.resolver, self._described = message[1], message[2]
            self.ready_at = time.monotonic()
            with self._lock:
                if self.state == "starting":
                    self.state = "ready"
            self._ready.set()
            logger.info("engine process %s (pid %s) is ready", self.name, self.pid)
        elif kind == "load_failed":
            self.load_error = message[1]
            logger.error("engine process %s failed to load: %s", self.name, message[1])
        elif kind == "closed":
            self.state = "closed"

    def _gone(self) -> None:
        """The pipe closed, or broke: the process ended, on purpose or not. One that still runs behind a broken
        pipe is ended too, so it cannot hold a device while its slot is restarted."""
        self._process.join(1.0)
        if self._process.is_alive() and self.state not in ("closing", "closed"):
            self._end_process()
        with self._lock:
            closing = self.state in ("closing", "closed")
            if not closing:
                self.state = "failed" if self.load_error is not None else "dead"
        self._ready.set()
        if closing:
            self._fail_all(lambda _: EngineClosedError())
            return
        code = self._process.exitcode
        how = (f"was killed by {signal.Signals(-code).name}" if code is not None and code < 0
               else f"exited with status {code}")
        if self.load_error is None:
            logger.error("engine process %s (pid %s) %s", self.name, self.pid, how)
        self._fail_all(lambda sent: EngineProcessLostError(
            f"engine process {self.name} {how} while {'denoising' if sent.started else 'holding'} this request; "
            "retry it", started=sent.started))
        if self._on_exit is not None:
            self._on_exit(self)

    def _fail(self, request_id: str, error: BaseException) -> None:
        sent = self._sent.get(request_id)
        if sent is not None:
            set_exception(sent.future, error)

    def _fail_all(self, error_for: Callable[[_Sent], BaseException]) -> None:
        with self._lock:
            held = list(self._sent.values())
        for sent in held:
            set_exception(sent.future, error_for(sent))

    def _settled(self, request_id: str, future: Future) -> None:
        with self._lock:
            sent = self._sent.pop(request_id, None)
            if sent is not None:
                self._work -= sent.work
        if future.cancelled() and self.state == "ready":
            self._send(("cancel", request_id))  # the process drops its remaining work at the next step


def set_result(future: Future, result: Any) -> None:
    """Settle ``future`` unless its caller cancelled it meanwhile (then nothing is owed)."""
    try:
        future.set_result(result)
    except InvalidStateError:
        pass


def set_exception(future: Future, error: BaseException) -> None:
    """Fail ``future`` unless its caller cancelled it meanwhile."""
    try:
        future.set_exception(error)
    except InvalidStateError:
        pass


def _call(callback: Callable, *args: Any) -> None:
    try:
        callback(*args)
    except Exception:  # a caller's callback must never stop the pipe's reader
        logger.exception("a request's event callback raised; ignoring it")
