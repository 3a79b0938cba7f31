"""The errors baton raises.

Two kinds matter to a caller, as in vLLM: a :class:`RequestError` fails one request and leaves the engine serving
(a server maps it to a 4xx, or a 500 when a stage broke), while :class:`EngineDeadError` means the engine cannot
serve anymore (a server answers 503 and turns readiness red).
"""

from __future__ import annotations

from typing import Any


class BatonError(Exception):
    """Base class of every error baton raises on purpose."""


class RequestError(BatonError):
    """Fails one request; the engine keeps serving the others."""


class InvalidRequestError(RequestError, ValueError):
    """A request field has a value that is not allowed. Raised before any model work.

    Attributes:
        field: the request field at fault, e.g. ``"width"``.
        value: the value that was given.
        allowed: what would have been accepted, in words.
    """

    def __init__(self, field: str, value: Any, allowed: str) -> None:
        self.field = field
        self.value = value
        self.allowed = allowed
        super().__init__(f"`{field}` {allowed}, got {value!r}")

    def __reduce__(self):  # pickled across an engine process's pipe: rebuilt from its fields, not its message
        return type(self), (self.field, self.value, self.allowed)


class QueueFullError(RequestError):
    """The engine's admission queue is full; the caller should retry later."""


class StageError(RequestError):
    """A pipeline stage raised while running the batch this request was in.

    Only that batch fails; the stage's worker goes on serving. The original exception is ``__cause__``.
    """

    def __init__(self, stage: str, cause: BaseException) -> None:
        self.stage = stage
        super().__init__(f"stage `{stage}` failed: {type(cause).__name__}: {cause}")
        self.__cause__ = cause

    def __reduce__(self):  # across a pipe the cause travels as text: it may not pickle
        return _stage_error, (self.stage, str(self))


def _stage_error(stage: str, message: str) -> StageError:
    error = StageError.__new__(StageError)
    Exception.__init__(error, message)
    error.stage = stage
    return error


class EngineClosedError(BatonError):
    """The engine is closed (or closing): it accepts no new work, and with ``close(drain=False)`` or a close
    timeout it fails what it had not finished (the default message)."""

    def __init__(self, message: str = "the engine was closed before this request finished") -> None:
        super().__init__(message)


class EngineDeadError(BatonError):
    """A worker of the engine died: nothing more can be served. Recreate the engine."""


class EngineProcessLostError(BatonError):
    """The engine process serving this request died (a crash, the OOM killer, ``kill -9``).

    A router retries such a request once on another engine when it had not started denoising; otherwise (or
    when the retry fails too) the caller gets this error and should retry: a server answers 503 with
    ``x-should-retry: true``.

    Attributes:
        started: the request had started denoising when the process died.
    """

    def __init__(self, message: str, started: bool = False) -> None:
        super().__init__(message)
        self.started = started

    def __reduce__(self):
        return type(self), (str(self), self.started)
