"""One measurement for every mode: forward hooks on a model's text encoders, denoiser and VAE decoder.

The plain diffusers pipeline has no stage records, so comparing it with baton fairly means measuring both the
same way. The hooks log when each component ran (CUDA events on a GPU, so spans are device time) and how many
rows the denoiser got, which yields the denoiser's busy fraction and mean batch for any mode.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import torch

from baton.device import Mark, elapsed_s, mark_now
from baton.models.runner import ModelRunner

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

    Example::

        with ComponentProbe(runner) as probe:
            ...  # run requests through an engine or a diffusers pipeline sharing runner's modules
        busy = sum(span.seconds for span in probe.spans if span.component == "denoise")
    """

    def __init__(self, runner: ModelRunner) -> None:
        pipeline = runner.pipeline
        decoders = {id(vae.decoder): vae.decoder for vae in (runner.vae, pipeline.vae)}  # baton may keep a copy
        self._modules: list[tuple[str, torch.nn.Module]] = [
            *(("text_encode", m) for m in (getattr(pipeline, "text_encoder", None),
                                            getattr(pipeline, "text_encoder_2", None)) if m is not None),
            ("denoise", pipeline.unet),
            *(("vae_decode", decoder) for decoder in decoders.values()),
        ]
        self._device = runner.device
        self._open = threading.local()  # per thread: calls started and not yet finished
        self._lock = threading.Lock()
        self._handles: list[Any] = []
        self.spans: list[Span] = []

    def __enter__(self) -> ComponentProbe:
        for component, module in self._modules:
            self._handles.append(module.register_forward_pre_hook(self._before, with_kwargs=True))
            self._handles.append(module.register_forward_hook(self._after_for(component), with_kwargs=True))
        return self

    def __exit__(self, *exc_info: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def take(self) -> list[Span]:
        """The spans logged so far, emptying the log."""
        with self._lock:
            spans, self.spans = self.spans, []
        return spans

    def _before(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        first = args[0] if args else next(iter(kwargs.values()), None)
        rows = first.shape[0] if isinstance(first, torch.Tensor) and first.dim() > 0 else 0
        stack = self._open.__dict__.setdefault("calls", {})
        stack[id(module)] = (mark_now(self._device), rows)

    def _after_for(self, component: str):
        def after(module: torch.nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            start, rows = self._open.calls.pop(id(module))
            span = Span(component, start, mark_now(self._device), rows)
            with self._lock:
                self.spans.append(span)

        return after
