"""Device plumbing: picking the device and dtype, and per-stage CUDA streams with event hand-offs.

Each stage runs its kernels on its own stream. A stage that hands tensors on records an event; the next stage makes
its stream wait for that event (a device-side wait: the host never blocks) and marks the tensors as used on its
stream so the caching allocator does not recycle them early. On the CPU all of this is a no-op.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU. Asking for CUDA without it is an error, not a silent fallback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"`device` is {name!r} but CUDA is not available on this machine; use 'cpu' or 'auto'")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto`` → float16 on CUDA, float32 on CPU. float16 on a CPU is refused: it is slow and not a real choice."""
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if name not in _DTYPES:
        raise ValueError(f"`dtype` must be one of {['auto', *_DTYPES]}, got {name!r}")
    if name == "float16" and device.type == "cpu":
        raise ValueError("`dtype` 'float16' is not supported on the CPU; use 'float32' or 'bfloat16'")
    return _DTYPES[name]


def set_thread_cpu_threads(count: int) -> None:
    """Size the calling thread's intra-op pool (OpenMP's thread count is per calling thread).

    ``get_num_threads`` first settles the thread's lazy initialization, which copies the process-wide value that
    another thread may just have changed; only then is this thread's own count set."""
    torch.get_num_threads()
    torch.set_num_threads(count)


@contextlib.contextmanager
def labelled(name: str, device: torch.device) -> Iterator[None]:
    """A named range in profiler traces (``record_function``) and, on CUDA, in Nsight (NVTX)."""
    with torch.profiler.record_function(name):
        if device.type != "cuda":
            yield
            return
        torch.cuda.nvtx.range_push(name)
        try:
            yield
        finally:
            torch.cuda.nvtx.range_pop()


@dataclass(frozen=True, slots=True)
class Mark:
    """A point in one stage's timeline: a CUDA timing event on a GPU, ``perf_counter`` on both."""

    wall: float
    event: torch.cuda.Event | None = None


def elapsed_s(start: Mark, end: Mark) -> float:
    """Seconds between two marks: device time when both carry events. Call only once the work has completed
    (after the result reached the host), so reading the events never blocks."""
    if start.event is not None and end.event is not None:
        return start.event.elapsed_time(end.event) / 1000.0
    return end.wall - start.wall


def mark_now(device: torch.device) -> Mark:
    """Now, on the host and (on a GPU) at this point of the current stream's queue."""
    if device.type != "cuda":
        return Mark(time.perf_counter())
    event = torch.cuda.Event(enable_timing=True)
    event.record(torch.cuda.current_stream(device))
    return Mark(time.perf_counter(), event)


class StageStream:
    """One stage's CUDA stream, or nothing on a CPU."""

    def __init__(self, device: torch.device) -> None:
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Run the enclosed work on this stage's stream."""
        if self.stream is None:
            yield
            return
        with torch.cuda.stream(self.stream):
            yield

    def record(self) -> torch.cuda.Event | None:
        """An event marking everything queued on this stream so far; the next stage waits on it."""
        if self.stream is None:
            return None
        event = torch.cuda.Event()
        event.record(self.stream)
        return event

    def wait(self, event: torch.cuda.Event | None, *tensors: torch.Tensor | None) -> None:
        """Make this stream wait (on the device) for ``event``, and keep ``tensors`` alive for this stream."""
        if self.stream is None or event is None:
            return
        self.stream.wait_event(event)
        for tensor in tensors:
            if tensor is not None and tensor.is_cuda:
                tensor.record_stream(self.stream)

    def mark(self) -> Mark:
        """Now, on the host and (on a GPU) at this point of the stream's queue."""
        if self.stream is None:
            return Mark(time.perf_counter())
        event = torch.cuda.Event(enable_timing=True)
        event.record(self.stream)
        return Mark(time.perf_counter(), event)
