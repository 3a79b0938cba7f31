"""Batch invariance: a request's image must not depend on the requests it shares a batch with.

A GEMM sums in an order that depends on its number of rows (M), so the same row gives results that differ by
~1e-7 in a batch of 4 and in a batch of 2. The UNet's convolutions, attention, norms and token-wise linears give
a row the same result in any batch of two or more (measured: bitwise, on this CPU; a batch of one may take
another convolution algorithm, ~1e-6 off), but its 2-D linears do not: the time and
"text_time" embedding MLPs and each resnet's time projection, whose 1e-7 feeds every later layer and grows to
1e-5 in the image over a few dozen steps; so does SDXL's pooled text projection in the text encoder. Running those
layers with each request's rows apart gives them the M the request has alone, and a batched UNet forward then
equals the lone one bitwise. Requests with equal row counts share one batched GEMM call, so it costs about
nothing (measured: within noise of the plain forward for tiny-sd15 at 16 rows). It is on by default on a CPU;
on a GPU, where cuBLAS picks kernels by shape and fp16 rounding dominates anyway, it is off unless
``EngineConfig.batch_invariant`` asks for it.
Only instance forwards change: parameters and state-dict keys stay as they are.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence

import torch


def run_rows_separately(linear: torch.nn.Linear, enabled: Callable[[], bool] = lambda: True) -> None:
    """Run ``linear`` one row at a time while ``enabled()`` (for inputs whose every row is a request of its own,
    M = 1 alone)."""

    def forward(rows: torch.Tensor) -> torch.Tensor:  # [B, D] -> [B, P]
        if rows.dim() != 2 or rows.shape[0] == 1 or not enabled():
            return torch.nn.functional.linear(rows, linear.weight, linear.bias)
        return torch.cat([torch.nn.functional.linear(row, linear.weight, linear.bias) for row in rows.split(1)])

    linear.forward = forward


class RequestSegments:
    """Makes some linears compute each request's rows as a GEMM of their own, when told where the requests lie.

    Example::

        segments = RequestSegments(runner.batch_variant_layers())
        with segments.split([2, 2, 1]):  # rows of three requests, in order
            unet(...)

    Requests with the same number of rows go through one batched GEMM (``baddbmm``: one small GEMM per request
    in a single call, bitwise equal to each request's own ``linear`` on this CPU, and one call instead of one per
    request). Outside :meth:`split` (the plain diffusers pipeline, a batch of one request) the linears run as
    usual. The rows are per thread, so another thread's calls are never split by mistake.
    """

    def __init__(self, linears: Sequence[torch.nn.Linear]) -> None:
        self._local = threading.local()
        self._patched: list[tuple[torch.nn.Linear, object | None]] = []
        for linear in linears:
            self._patch(linear)

    def remove(self) -> None:
        """Give the linears back their own forwards (a compiled model must not trace the per-thread switch)."""
        for linear, own_forward in self._patched:
            if own_forward is None:
                del linear.forward  # the class's forward again
            else:
                linear.forward = own_forward
        self._patched = []

    @contextlib.contextmanager
    def split(self, rows: Sequence[int]) -> Iterator[None]:
        previous = getattr(self._local, "rows", None)
        self._local.rows = _Layout(rows) if len(rows) > 1 else None
        try:
            yield
        finally:
            self._local.rows = previous

    def _patch(self, linear: torch.nn.Linear) -> None:
        forward = linear.forward
        self._patched.append((linear, vars(linear).get("forward")))
        local = self._local

        def split_forward(sample: torch.Tensor) -> torch.Tensor:
            layout: _Layout | None = getattr(local, "rows", None)
            if layout is None or sample.dim() != 2 or sample.shape[0] != layout.total:
                return forward(sample)
            return layout.apply(sample, linear.weight, linear.bias)

        linear.forward = split_forward


class _Layout:
    """Where each request's rows lie in the batch, grouped by row count."""

    def __init__(self, rows: Sequence[int]) -> None:
        self.total = sum(rows)
        self.uniform = rows[0] if len(set(rows)) == 1 else None
        self.count = len(rows)
        self.groups: dict[int, list[int]] = {}  # row count -> offsets of the requests with that many rows
        offset = 0
        for count in rows:
            self.groups.setdefault(count, []).append(offset)
            offset += count

    def apply(self, sample: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if self.uniform is not None:  # the usual case: a view, one call
            return _per_request_linear(sample.view(self.count, self.uniform, -1), weight, bias).flatten(0, 1)
        out = sample.new_empty(self.total, weight.shape[0])
        for count, offsets in self.groups.items():
            parts = torch.stack([sample[o : o + count] for o in offsets])
            for offset, result in zip(offsets, _per_request_linear(parts, weight, bias)):
                out[offset : offset + count] = result
        return out


def _per_request_linear(parts: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """[S, r, K] -> [S, r, N]: S separate GEMMs of r rows, in one call."""
    s, r, k = parts.shape
    n = weight.shape[0]
    if bias is None:  # e.g. the guidance-embedding projection of guidance-distilled UNets (cond_proj)
        return torch.bmm(parts, weight.t().expand(s, k, n))
    return torch.baddbmm(bias.expand(s, r, n), parts, weight.t().expand(s, k, n))
