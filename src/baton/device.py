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


def copy_to_device(tensor: torch.Tensor, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A host tensor on ``device`` (in ``dtype``), queued on the current stream without making the host wait.

    A plain ``.to(device)`` from host memory blocks the host until the stream has drained up to the copy, and a
    ``non_blocking`` copy from pageable memory still waits for its staging; only a copy from pinned (page-locked)
    memory is truly asynchronous. So the tensor is cast on the host first (a cast during the copy would stage it
    in pageable memory again), pinned, then copied ``non_blocking``. Pinned blocks come from torch's caching host
    allocator, which keeps each one until the copy that reads it has run."""
    if dtype is not None and tensor.dtype != dtype:
        tensor = tensor.to(dtype)
    if tensor.device == device:
        return tensor
    if device.type == "cuda" and tensor.device.type == "cpu" and not tensor.is_pinned():
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)


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
    """One stage's CUDA stream, or nothing on a CPU.

    ``high_priority``: the stream gets the device's highest priority. The denoiser's does: it is the stage every
    request spends most of its time in, so when its kernels and an encode's or a decode's are queued together,
    the GPU's block scheduler should start the denoiser's first (a decode that finishes a little later delays one
    request; a denoiser forward that waits delays every request in the batch)."""

    def __init__(self, device: torch.device, high_priority: bool = False) -> None:
        self.stream = None
        if device.type == "cuda":
            # priorities run from 0 (the default, lowest) down to a negative "greatest" value (CUDA's range,
            # clamped by torch to the priority pools it keeps)
            priority = _greatest_stream_priority() if high_priority else 0
            self.stream = torch.cuda.Stream(device, priority=priority)

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


def _greatest_stream_priority() -> int:
    """The device's highest stream priority (``cudaDeviceGetStreamPriorityRange``); torch clamps anything beyond
    its own pools to the nearest it has."""
    priority_range = getattr(torch.cuda.Stream, "priority_range", None)
    return priority_range()[1] if priority_range is not None else -1
