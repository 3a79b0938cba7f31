"""One measurement for every mode: the times of a model's text encoders, denoiser and VAE decoder.

The plain diffusers pipeline has no stage records, so comparing it with baton fairly means measuring both the
same way. The probe logs when each component ran (CUDA events on a GPU, so spans are device time) and how many
rows the denoiser got, which yields the denoiser's busy fraction and mean batch for any mode.

On a GPU a span between two events counts the host's launch gaps inside a forward as busy. For the denoiser's
true kernel time, turn on :attr:`ComponentProbe.label_denoiser` under ``torch.profiler`` (:func:`profiled_pass`)
and add up the kernels launched inside its ranges (:func:`denoiser_kernel_s`).
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import threading
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from baton.device import Mark, elapsed_s, mark_now
from baton.models.runner import ModelRunner
from baton.stage_names import DENOISE, TEXT_ENCODE, VAE_DECODE

logger = logging.getLogger(__name__)

DENOISE_LABEL = "probe/denoise"
"""The ``record_function`` range around each denoiser forward while :attr:`ComponentProbe.label_denoiser` is on."""
DEVICE_WORK = frozenset({"kernel", "gpu_memcpy", "gpu_memset"})
"""Kineto activity types of work on the GPU (its annotations and the host's runtime calls are not)."""


@dataclass(frozen=True, slots=True)
class Span:
    """One call of one component."""

    component: str
    start: Mark
    end: Mark
    rows: int  # batch size of the call's first input

    @property
    def seconds(self) -> float:
        return elapsed_s(self.start, self.end)


class ComponentProbe:
    """Logs a :class:`Span` for every call of the runner's text encoder(s), denoiser and VAE decoder.

    The denoiser is caught in two places: forward hooks on the UNet (what the diffusers pipeline calls; leave
    them out with ``hook_unet=False`` where only baton's stages run, so a compiled UNet never sees a new hook) and
    a wrapper around ``runner.denoiser`` (what baton's stages call). The wrapper is what sees a compiled or
    CUDA-graphed denoiser, which never runs the UNet's hooks; a UNet call inside the wrapper is not logged twice.

    Example::

        with ComponentProbe(runner) as probe:
            ...  # run requests through an engine or a diffusers pipeline sharing runner's modules
        busy = sum(span.seconds for span in probe.spans if span.component == DENOISE)
    """

    def __init__(self, runner: ModelRunner, hook_unet: bool = True) -> None:
        pipeline = runner.pipeline
        decoders = {id(vae.decoder): vae.decoder for vae in (runner.vae, pipeline.vae)}  # baton may keep a copy
        self._modules: list[tuple[str, torch.nn.Module]] = [
            *((TEXT_ENCODE, m) for m in runner.text_encoders()),
            *(((DENOISE, runner.denoiser_module),) if hook_unet else ()),
            *((VAE_DECODE, decoder) for decoder in decoders.values()),
        ]
        self._runner = runner
        self._device = runner.device
        self._open = threading.local()  # per thread: calls started and not yet finished
        self._lock = threading.Lock()
        self._handles: list[Any] = []
        self._wrapped_denoiser: Any = None
        self.spans: list[Span] = []
        self.label_denoiser = False
        """Wrap each denoiser forward in a ``record_function`` range named :data:`DENOISE_LABEL` (for a pass
        under ``torch.profiler``; off otherwise, as it costs a few microseconds a call)."""

    def __enter__(self) -> ComponentProbe:
        for component, module in self._modules:
            self._handles.append(module.register_forward_pre_hook(self._before_for(component), with_kwargs=True))
            self._handles.append(module.register_forward_hook(self._after_for(component), with_kwargs=True,
                                                                  always_call=True))
        self._wrapped_denoiser = self._runner.denoiser
        self._runner.denoiser = self._denoiser_for(self._wrapped_denoiser)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        if self._wrapped_denoiser is not None:
            self._runner.denoiser = self._wrapped_denoiser
            self._wrapped_denoiser = None

    def take(self) -> list[Span]:
        """The spans logged so far, emptying the log."""
        with self._lock:
            spans, self.spans = self.spans, []
        return spans

    # -- recording ------------------------------------------------------------------------------------------------
    def _begin(self, key: int, component: str, rows: int) -> None:
        calls = self._open.__dict__.setdefault("calls", {})
        if component == DENOISE and self._open.__dict__.get("in_denoiser", 0):
            calls[key] = None  # the UNet inside baton's denoiser wrapper: the wrapper logs this forward
            return
        label = None
        if component == DENOISE:
            self._open.in_denoiser = self._open.__dict__.get("in_denoiser", 0) + 1
            if self.label_denoiser:
                label = torch.profiler.record_function(DENOISE_LABEL)
                label.__enter__()
        calls[key] = (mark_now(self._device), rows, label)

    def _end(self, key: int, component: str) -> None:
        opened = self._open.calls.pop(key)
        if opened is None:
            return
        start, rows, label = opened
        end = mark_now(self._device)
        if component == DENOISE:
            self._open.in_denoiser -= 1
            if label is not None:
                label.__exit__(None, None, None)
        with self._lock:
            self.spans.append(Span(component, start, end, rows))

    def _before_for(self, component: str):
        def before(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
            first = args[0] if args else next(iter(kwargs.values()), None)
            rows = first.shape[0] if isinstance(first, torch.Tensor) and first.dim() > 0 else 0
            self._begin(id(module), component, rows)

        return before

    def _after_for(self, component: str):
        def after(module: torch.nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            self._end(id(module), component)

        return after

    def _denoiser_for(self, forward):
        key = id(self)  # the wrapper's own key: a module's id never equals the probe's

        def denoiser(latents, timesteps, conditioning):
            self._begin(key, DENOISE, latents.shape[0])
            try:
                return forward(latents, timesteps, conditioning)
            finally:
                self._end(key, DENOISE)

        return denoiser


@contextlib.contextmanager
def profiled_pass(probe: ComponentProbe, device: torch.device) -> Iterator[dict[str, Any]]:
    """Profile the enclosed work with the denoiser's forwards labelled. On exit the yielded dict holds
    ``kernel_s`` and ``ranges`` (see :func:`denoiser_kernel_s`)."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    try:  # the stages run on threads started before the profiler: it must follow every thread
        options = {"experimental_config": torch._C._profiler._ExperimentalConfig(profile_all_threads=True)}
    except TypeError:  # an older torch: ranges on threads started before the profiler go unseen, and the
        # busy figure falls back to the spans (the row says so)
        options = {}
    outcome: dict[str, Any] = {}
    probe.label_denoiser = True
    try:
        with torch.profiler.profile(activities=activities, **options) as profiler:
            yield outcome
            if device.type == "cuda":
                torch.cuda.synchronize(device)  # every kernel of the pass inside the trace
    finally:
        probe.label_denoiser = False
    cuda = device.type == "cuda"
    try:
        raw = profiler.profiler.kineto_results.events()
    except AttributeError:  # a torch that keeps them elsewhere: the slow, documented way
        outcome["kernel_s"], outcome["ranges"] = denoiser_kernel_s(profiler.events(), cuda)
    else:
        outcome["kernel_s"], outcome["ranges"] = denoiser_kernel_s_raw(raw, cuda)


def denoiser_kernel_s_raw(events, cuda: bool) -> tuple[float, int]:
    """:func:`denoiser_kernel_s` from kineto's raw events, about 30x faster than building ``profiler.events()``
    (~1 µs an event against ~40 here; an eager SD1.5 forward is several thousand events).

    Kineto links each piece of GPU work to the innermost host op or range that launched it (its
    ``linked_correlation_id`` is that op's ``correlation_id``); the work counts when that op started inside a
    :data:`DENOISE_LABEL` range of the same thread. A CUDA graph's replay is launched by no op: its kernels link
    to the range itself, which starts inside itself."""
    ranges: dict[int, list[tuple[int, int]]] = defaultdict(list)  # thread -> (start, end) ns
    ops: dict[int, tuple[int, int]] = {}  # correlation id -> (thread, start ns) of host ops and ranges
    work: list[tuple[int, int]] = []  # (linked correlation id, duration ns) of GPU work
    for event in events:
        kind = event.activity_type()
        if kind in DEVICE_WORK:
            work.append((event.linked_correlation_id(), event.duration_ns()))
        elif event.device_type() == torch.autograd.DeviceType.CPU and event.linked_correlation_id() == 0:
            thread, start = event.start_thread_id(), event.start_ns()
            ops[event.correlation_id()] = (thread, start)
            if event.name() == DENOISE_LABEL:
                ranges[thread].append((start, event.end_ns()))
    count = sum(len(spans) for spans in ranges.values())
    if not cuda:
        return sum(end - start for spans in ranges.values() for start, end in spans) / 1e9, count
    for spans in ranges.values():
        spans.sort()
    starts = {thread: [start for start, _ in spans] for thread, spans in ranges.items()}
    total_ns = 0
    for linked, duration in work:
        op = ops.get(linked)
        if op is None or op[0] not in ranges:
            continue
        thread, start = op
        i = bisect.bisect_right(starts[thread], start) - 1
        if i >= 0 and start <= ranges[thread][i][1]:
            total_ns += duration
    return total_ns / 1e9, count


def denoiser_kernel_s(events, cuda: bool) -> tuple[float, int]:
    """(seconds, ranges): the summed time of the work inside the :data:`DENOISE_LABEL` ranges. On CUDA: the
    GPU work launched inside them, from any thread (kernel time, no launch gaps); on a CPU: the ranges' CPU
    time, which is the kernels' time there. Takes ``profiler.events()``."""
    total_us, ranges = 0.0, 0
    for event in events:
        if event.name != DENOISE_LABEL or event.device_type != torch.autograd.DeviceType.CPU:
            continue  # (on CUDA the same range also shows on the GPU's timeline, as a span with the gaps)
        ranges += 1
        if not cuda:
            total_us += event.cpu_time_total
            continue
        stack = [event]
        while stack:
            op = stack.pop()
            # not the range's own GPU-timeline span, should kineto link it here: that one holds the gaps
            total_us += sum(kernel.duration for kernel in op.kernels if kernel.name != DENOISE_LABEL)
            stack.extend(op.cpu_children)
    return total_us / 1e6, ranges
