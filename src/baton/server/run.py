"""Running the app under uvicorn: the listening socket bound before anything is announced, deadlines for slow
clients (``baton.server.connections``), and a bounded drain on SIGTERM or Ctrl-C.

The drain, step by step:

1. The first signal turns readiness red (``/readyz`` 503) and new work is refused with 503 and ``Retry-After``.
   The listener stays open, so a client or load balancer gets that answer instead of a refused connection.
2. Requests in flight run on, until none is pending or ``ServerConfig.drain_timeout_s`` has passed. A second
   signal ends this wait at once.
3. The engine is closed with ``drain=False``: what is still in flight fails at its next step boundary, or after
   ``ABORT_TIMEOUT_S`` regardless (a step that never returns), and each of its clients gets an error answer.
4. uvicorn's own shutdown: it stops listening, lets the last answers be written (at most
   ``CLOSE_CONNECTIONS_S``), and runs the app's lifespan shutdown. A third signal skips that wait.

Whatever hangs, the process is gone ``HARD_EXIT_AFTER_DRAIN_S`` after the drain timeout (see
:meth:`BatonServer.handle_exit`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
import socket
import time

import uvicorn
from fastapi import FastAPI

from baton.server.connections import HeaderTimeoutProtocol
from baton.server.state import ServerState

logger = logging.getLogger(__name__)

ABORT_TIMEOUT_S = 2.0
"""After the drain, how long the engine's workers get to stop at a step boundary before what they hold is
failed regardless (their threads are daemons: a hung step does not keep the process alive)."""
CLOSE_CONNECTIONS_S = 3
"""uvicorn's graceful shutdown: how long answers already decided (the errors of the failed requests, an image
download) may take to be written before their connections are cut."""
HARD_EXIT_AFTER_DRAIN_S = 10.0
"""The last resort, counted from the end of the drain timeout: ``ABORT_TIMEOUT_S`` and ``CLOSE_CONNECTIONS_S``
plus 5 s for the lifespan shutdown and the interpreter's exit. Past it the kernel ends the process (SIGALRM)."""
_DRAIN_POLL_S = 0.05


def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (0: a free port), as uvicorn binds one.

    Bound here rather than by uvicorn so that a busy port is one error before the server starts (uvicorn logs it
    and exits 1 after it has started), and the URL is announced only once it can be reached."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart need not wait out TIME_WAIT
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ValueError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


class BatonServer(uvicorn.Server):
    """uvicorn's server with the bounded drain described in this module's docstring, instead of uvicorn's own
    shutdown on the first signal (which closes the listener at once and waits for in-flight requests without a
    limit).

    Args:
        config: uvicorn's settings (see :func:`build_server`).
        state: the app's state, for the engine and the drain settings.
        hard_exit: arm the last-resort exit on the first signal. Only for a process of its own: the alarm ends
            the whole process, a test runner included.
    """

    def __init__(self, config: uvicorn.Config, state: ServerState, hard_exit: bool = False) -> None:
        super().__init__(config)
        self.state = state
        self.hard_exit = hard_exit
        self.signals = 0
        self._drain: asyncio.Task | None = None

    def handle_exit(self, sig: int, frame) -> None:
        # A signal handler: it only sets flags (and an alarm, one system call); on_tick does the work on the loop.
        self._captured_signals.append(sig)  # uvicorn re-raises them once shut down: the exit status says so
        self.signals += 1
        if self.signals == 1:
            self.state.start_draining()
            if self.hard_exit:
                # SIGALRM's default action ends the process in the kernel: it works when the interpreter cannot
                # run Python any more (a step stuck in native code holding the GIL), where a watchdog thread can't
                signal.signal(signal.SIGALRM, signal.SIG_DFL)
                signal.setitimer(signal.ITIMER_REAL, self.state.config.drain_timeout_s + HARD_EXIT_AFTER_DRAIN_S)
        elif self.signals >= 3:
            self.force_exit = True  # uvicorn: stop waiting for connections, skip the lifespan shutdown

    async def on_tick(self, counter: int) -> bool:
        if self.signals and self._drain is None:
            self._drain = asyncio.create_task(self._drain_then_exit())
        return await super().on_tick(counter)

    async def _drain_then_exit(self) -> None:
        state = self.state
        deadline = state.draining_since + state.config.drain_timeout_s
        engine = state.engine  # None while loading: nothing can be in flight then
        try:
            if engine is not None and engine.pending:
                logger.info("draining: new work gets 503; %d request(s) in flight get up to %g s to finish (a "
                            "second signal ends the wait)", engine.pending, state.config.drain_timeout_s)
            while engine is not None and engine.pending and self.signals < 2 and time.monotonic() < deadline:
                await asyncio.sleep(_DRAIN_POLL_S)
            if engine is not None:
                if engine.pending:
                    logger.warning("drain ended (%s) with %d request(s) in flight: failing them",
                                   "second signal" if self.signals >= 2 else "timeout", engine.pending)
                # in a thread: the loop keeps answering (503s, and the errors of the requests this fails)
                await asyncio.to_thread(engine.close, drain=False, timeout=ABORT_TIMEOUT_S)
        except Exception:  # the shutdown must go on whatever the engine does
            logger.exception("closing the engine failed")
        finally:
            self.should_exit = True


def build_server(app: FastAPI, log_level: str = "info", hard_exit: bool = False) -> BatonServer:
    """The uvicorn server for ``app`` (made by ``create_app``), with the deadlines of its ``ServerConfig``.

    The one place the server is put together: ``baton serve`` and the end-to-end tests both run it, on a socket
    from :func:`bind_socket` (``server.run(sockets=[sock])``)."""
    state: ServerState = app.state.baton
    config = state.config
    uvicorn_config = uvicorn.Config(
        app,  # its body deadline is the app's own middleware (create_app), so the 408s are counted
        log_level=log_level,
        # h11 always (httptools, when installed, would replace it): the header deadline lives in its subclass
        http=functools.partial(HeaderTimeoutProtocol, header_timeout_s=config.header_timeout_s),
        timeout_keep_alive=config.keep_alive_s,
        timeout_graceful_shutdown=CLOSE_CONNECTIONS_S,
        lifespan="on",
    )
    return BatonServer(uvicorn_config, state, hard_exit=hard_exit)


def serve(app: FastAPI, sock: socket.socket, log_level: str = "info") -> int:
    """Serve ``app`` on ``sock`` (from :func:`bind_socket`) until a signal ends the drain; the exit status."""
    try:
        build_server(app, log_level, hard_exit=True).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C's SIGINT once it has shut down: the drain is over
        return 130
    return 0
