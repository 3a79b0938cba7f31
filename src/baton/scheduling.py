"""Batching policies: which requests a stage runs next. Pure Python: no torch, no I/O, no sleeping.

Two policies: :func:`plan_batch` forms the batches of the stages that run a request once (text encoding, VAE
decoding), and :class:`StepPolicy` decides, before every denoiser forward, which requests join the running batch
and which of them take part in the forward. The workers (the mechanism, in ``baton.stages``) keep the waiting
lists and the clock; this module only decides, so every rule here is tested with plain objects in milliseconds.
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
    priority: int = 0
    """Higher is admitted sooner by :class:`StepPolicy` (:func:`plan_batch` is first come, first served)."""


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


@dataclass(frozen=True, slots=True)
class Running(Generic[T]):
    """A request the denoiser has started and not finished."""

    item: T
    key: Hashable
    """Only requests with equal keys share a forward (same model, latent size and dtype)."""
    rows: int
    """Denoiser rows it adds to a forward (two per image with classifier-free guidance, else one)."""
    last_ran_at: float
    """When the last forward it took part in finished. A request that joins a running key takes that key's
    time, so joining never pushes a key back in the rotation; one that starts a key counts from its arrival."""


@dataclass(frozen=True, slots=True)
class StepDecision(Generic[T]):
    """Start ``admit`` now, then run one forward over every running request whose key is ``run_key``.

    ``run_key`` is ``None`` when nothing can run yet: look again after ``wait_s`` (``None``: when something
    arrives)."""

    admit: list[Waiting[T]]
    run_key: Hashable | None
    wait_s: float | None = None


@dataclass(frozen=True, slots=True)
class StepPolicy:
    """The denoiser's scheduler, asked before every forward.

    Admission. Waiting requests are ranked as if each priority level had made them arrive ``priority_aging_s``
    earlier: first come, first served on that clock. A request is therefore admitted ahead of every request
    ``k`` levels above it that arrived more than ``k * priority_aging_s`` after it: delayed, never starved.
    In rank order, each joins the running requests of its key while their rows stay within ``max_rows``. The
    first that does not fit closes its key to the requests ranked below it until rows free up, so a large request
    is never overtaken for ever by small ones; a request larger than ``max_rows`` runs once its key has nothing
    running. With ``join_running=False`` (request-level batching) nothing is admitted while anything runs: a
    batch forms, runs to the end, and only then does the next form.

    Waiting. An idle denoiser holds a partial batch up to ``max_wait_s`` for more requests (``flush`` ends that,
    at shutdown). A busy one never waits: late requests join at the next step boundary.

    The forward. Requests of different keys cannot share a forward; the key that ran least recently goes next
    (round robin over keys), so every running request advances at least once every K forwards, K being the
    number of keys in flight. With running requests finishing in a bounded number of steps and waiting ranks
    rising with age, no request starves.
    """

    max_rows: int
    max_wait_s: float = 0.0
    join_running: bool = True
    priority_aging_s: float = 1.0

    def rank(self, waiting: Sequence[Waiting[T]]) -> list[Waiting[T]]:
        """Waiting requests in the order they are offered a place: earliest priority-adjusted arrival first.

        (Ranking by priority plus time waited gives the same order at any moment: the ages grow alike.)"""
        return sorted(waiting, key=lambda w: (w.arrived_at - w.priority * self.priority_aging_s, w.arrived_at))

    def plan(
        self,
        running: Sequence[Running[T]],
        waiting: Sequence[Waiting[T]],
        now: float,
        flush: bool = False,
    ) -> StepDecision[T]:
        # 1. admission, in rank order, within each key's free rows
        rows: dict[Hashable, int] = {}
        for request in running:
            rows[request.key] = rows.get(request.key, 0) + request.rows
        rows_before = set(rows)
        admit: list[Waiting[T]] = []
        if waiting and (self.join_running or not running):
            ranked = self.rank(waiting)
            # request-level batching forms one batch, of the top-ranked request's key
            only_key = None if self.join_running else ranked[0].key
            closed: set[Hashable] = set()
            for candidate in ranked:
                key = candidate.key
                if key in closed or (only_key is not None and key != only_key):
                    continue
                taken = rows.get(key, 0)
                if taken == 0 or taken + candidate.size <= self.max_rows:
                    admit.append(candidate)
                    rows[key] = taken + candidate.size
                else:
                    closed.add(key)
        # 2. an idle denoiser may hold a partial batch a little while for more requests
        if not running and admit and not flush:
            head = admit[0]  # the top-ranked request: with nothing running it always gets in
            waited = now - head.arrived_at
            if rows[head.key] < self.max_rows and waited < self.max_wait_s:
                return StepDecision([], None, wait_s=self.max_wait_s - waited)
        # 3. the key that ran least recently runs next; a key with nothing running yet counts from its arrival
        last_ran: dict[Hashable, float] = {}
        for request in running:
            last_ran[request.key] = max(request.last_ran_at, last_ran.get(request.key, request.last_ran_at))
        for request in admit:
            if request.key not in rows_before:
                last_ran[request.key] = min(request.arrived_at, last_ran.get(request.key, request.arrived_at))
        if not last_ran:
            return StepDecision([], None)
        run_key = min(last_ran, key=last_ran.__getitem__)
        return StepDecision(admit, run_key)
