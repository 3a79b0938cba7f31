"""Batch invariance: a request's image must not depend on the requests it shares a batch with.

A GEMM sums in an order that depends on its number of rows (M), so the same row gives results that differ by
~1e-7 in a batch of 4 and in a batch of 2. The UNet's convolutions, attention, norms and token-wise linears give
a row the same result in any batch of two or more (measured: bitwise, on this CPU; a batch of one may take
another convolution algorithm, ~1e-6 off), but its 2-D linears do not: the time and
"text_time" embedding MLPs and each resnet's time projection, whose 1e-7 feeds every later layer and grows to
1e-5 in the image over a few dozen steps; so does SDXL's pooled text projection in the text encoder. Running those
layers with each request's rows apart gives them the M the request has alone, and a batched UNet forward then
equals the lone one bitwise. It costs one small GEMM per request per layer: nothing on a CPU, where it is on by
default; kernel launches on a GPU, where it is off unless ``EngineConfig.batch_invariant`` asks for it.
Only instance forwards change: parameters and state-dict keys stay as they are.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence

import torch


_BATCH_VARIANT_PARENTS = ("time_embedding", "add_embedding", "class_embedding")


def batch_variant_layers(unet: torch.nn.Module) -> list[torch.nn.Module]:
    """The UNet's linears that see one row per sample (M = batch): its embedding MLPs and time projections."""
    return [
        module
        for name, module in unet.named_modules()
        if isinstance(module, torch.nn.Linear)
        and (name.split(".")[0] in _BATCH_VARIANT_PARENTS or name.endswith("time_emb_proj"))
    ]


def run_rows_separately(linear: torch.nn.Linear) -> None:
    """Run ``linear`` one row at a time (for inputs whose every row is a request of its own, M = 1 alone)."""

    def forward(rows: torch.Tensor) -> torch.Tensor:  # [B, D] -> [B, P]
        if rows.dim() != 2 or rows.shape[0] == 1:
            return torch.nn.functional.linear(rows, linear.weight, linear.bias)
        return torch.cat([torch.nn.functional.linear(row, linear.weight, linear.bias) for row in rows.split(1)])

    linear.forward = forward


class RequestSegments:
    """Makes some modules run each request's rows apart, when the caller says where the requests lie.

    Example::

        segments = RequestSegments([unet.time_embedding, unet.add_embedding])
        with segments.split([2, 4, 1]):  # rows of three requests, in order
            unet(...)

    Outside :meth:`split` (the plain diffusers pipeline, a batch of one request) the modules run as usual. The
    rows are per thread, so another thread's calls are never split by mistake.
    """

    def __init__(self, modules: Sequence[torch.nn.Module | None]) -> None:
        self._local = threading.local()
        for module in modules:
            if module is not None:
                self._patch(module)

    @contextlib.contextmanager
    def split(self, rows: Sequence[int]) -> Iterator[None]:
        self._local.rows = list(rows) if len(rows) > 1 else None
        try:
            yield
        finally:
            self._local.rows = None

    def _patch(self, module: torch.nn.Module) -> None:
        forward = module.forward
        local = self._local

        def split_forward(sample: torch.Tensor, *args, **kwargs) -> torch.Tensor:
            rows = getattr(local, "rows", None)
            extra = [*args, *kwargs.values()]  # e.g. time_embedding's timestep_cond: None, or not split here
            if (rows is None or sample.dim() != 2 or sample.shape[0] != sum(rows)
                    or any(value is not None for value in extra)):
                return forward(sample, *args, **kwargs)
            return torch.cat([forward(part, *args, **kwargs) for part in sample.split(rows)])

        module.forward = split_forward
