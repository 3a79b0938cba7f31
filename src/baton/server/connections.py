"""Deadlines that keep a slow or stalled client from holding a connection: one for a request's headers, one for
its whole body. (Idle keep-alive connections are closed by uvicorn's ``timeout_keep_alive``.)

Each open connection costs a file descriptor and some memory, and uvicorn serves a bounded number of them; a few
hundred clients that send a byte every few seconds (slowloris) would otherwise keep the server from anyone else.
"""

from __future__ import annotations

import asyncio
import logging

from uvicorn.protocols.http.h11_impl import H11Protocol

from baton.server.errors import ApiError, error_response

logger = logging.getLogger(__name__)


class HeaderTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for a request's headers.

    uvicorn's keep-alive timer stops at the first byte a client sends, and nothing else limits how long the
    request line and headers may take. Here a timer starts when the connection opens and again after each
    response; when it fires, a connection on which no new request's headers have arrived since is closed.
    (A request counts from its complete headers: h11 hands uvicorn a request only then, and uvicorn gives it a
    new ``scope``.)"""

    def __init__(self, *args, header_timeout_s: float, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout_s = header_timeout_s
        self._header_timer: asyncio.TimerHandle | None = None
        self._scope_when_armed: object = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._header_timer is not None and self.scope is not self._scope_when_armed:
            self._cancel_header_timer()  # the headers are in; the body has its own deadline (BodyTimeout)

    def on_response_complete(self) -> None:
        # armed before uvicorn parses a pipelined request, which already counts as the next one's headers
        self._arm_header_timer()
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._scope_when_armed = self.scope
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_overdue)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_overdue(self) -> None:
        self._header_timer = None
        if self.scope is self._scope_when_armed and not self.transport.is_closing():
            # debug, not warning: a scan or an attack would fill the log
            logger.debug("closed a connection from %s: no complete request headers within %g s", self.client,
                         self.header_timeout_s)
            self.transport.close()


class BodyTimeout:
    """ASGI middleware: a request body that has not all arrived ``timeout_s`` after the app first asked for it is
    answered 408 (``code: body_timeout``, ``Connection: close``). A whole-body deadline, not one per chunk: a
    client sending a byte now and then would otherwise hold the connection for as long as it likes.

    The app is told the client left (``http.disconnect``), as a client that really left would tell it, and what
    it answers to that is dropped for the 408. The deadline runs only while the body is incomplete: afterwards
    the app's ``receive`` waits for a disconnect for as long as a response streams, which is no stall."""

    def __init__(self, app, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body_done = False
        timed_out = False
        response_started = False
        loop = asyncio.get_running_loop()
        deadline: float | None = None

        async def timed_receive():
            nonlocal body_done, timed_out, deadline
            if body_done:
                return await receive()
            if timed_out:
                return {"type": "http.disconnect"}
            if deadline is None:
                deadline = loop.time() + self.timeout_s
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                timed_out = True
                return {"type": "http.disconnect"}
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        async def guarded_send(message) -> None:
            nonlocal response_started
            if timed_out and not response_started:
                return  # the app's answer to a disconnect that was a stall: the 408 below replaces it
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, timed_receive, guarded_send)
        except Exception:
            if not timed_out or response_started:
                raise
        if timed_out and not response_started:
            error = ApiError(408, f"the request body did not arrive within {self.timeout_s:g} s",
                             code="body_timeout", headers={"Connection": "close"})
            await error_response(error)(scope, receive, send)
