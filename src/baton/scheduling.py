"""Batching policy: which waiting requests a stage runs next. Pure Python: no torch, no I/O, no sleeping.

The stage's worker (the mechanism, in ``baton.stages.base``) keeps the waiting list and the clock; this module only
decides, so every rule here is tested with plain objects in milliseconds.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Waiting(Generic[T]):
    """One request waiting at a stage."""

    item: T
    key: Hashable
    """Requests run together only when their keys are equal (same model, same shapes)."""
    size: int
    """What the request counts towards the batch limit (images, or prompts)."""
    arrived_at: float
    """When it entered the stage's queue (any monotonic clock, the same for all)."""


@dataclass(frozen=True, slots=True)
class BatchDecision(Generic[T]):
    """Run ``batch`` now, or, when it is empty, look again after ``wait_s`` (``None``: when something arrives)."""

    batch: list[Waiting[T]]
    wait_s: float | None = None


def plan_batch(
    waiting: Sequence[Waiting[T]],
    now: float,
    max_size: int,
    max_wait_s: float,
    flush: bool = False,
) -> BatchDecision[T]:
    """First come, first served, with compatible requests riding along.

    The oldest waiting request always goes in the next batch, so no request starves. Later requests with the same
    key join it in arrival order while the batch stays within ``max_size``; one that would overflow is skipped and
    keeps its place in line. A batch runs when it is full, when its oldest request has waited ``max_wait_s``, or
    when ``flush`` says no more requests are coming (shutdown).
    """
    if not waiting:
        return BatchDecision([])
    head = waiting[0]
    batch = [head]
    total = head.size
    for candidate in waiting[1:]:
        if total >= max_size:
            break
        if candidate.key == head.key and total + candidate.size <= max_size:
            batch.append(candidate)
            total += candidate.size
    waited = now - head.arrived_at
    if total >= max_size or flush or waited >= max_wait_s:
        return BatchDecision(batch)
    return BatchDecision([], wait_s=max_wait_s - waited)
