"""Load generators: C clients in a closed loop, or Poisson arrivals, against anything that takes a request index.

A target turns request ``i`` into work and returns a future; the drivers only keep the clock. Latency is what a
client sees: from its submission to its result.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from baton.request import StageTiming

Submit = Callable[[int], Future]
"""Start request ``i``; the future's result has ``timings`` (a dict of stage → StageTiming) and ``images``."""


HUNG = "hung"
"""How an outcome's error starts when its request never settled (``closed_loop``'s ``deadline_s``)."""


@dataclass(slots=True)
class Outcome:
    """One request as its client saw it."""

    submitted: float  # perf_counter
    finished: float
    images: int = 0
    timings: dict[str, StageTiming] = field(default_factory=dict)
    error: str | None = None

    @property
    def latency_s(self) -> float:
        return self.finished - self.submitted


def closed_loop(submit: Submit, clients: int, total: int, first_index: int = 0,
                deadline_s: float | None = None) -> list[Outcome]:
    """``clients`` threads, each submitting its next request as soon as its previous one returned, until
    ``total`` requests have been sent. ``deadline_s``: a request not settled this long after it was sent ends as
    an error starting ``HUNG`` (the client gives up on it)."""
    outcomes: list[Outcome] = []
    lock = threading.Lock()
    counter = iter(range(first_index, first_index + total))

    def client() -> None:
        while True:
            with lock:
                index = next(counter, None)
            if index is None:
                return
            started = time.perf_counter()
            outcome = _settle(_start(submit, index), started, deadline_s)
            with lock:
                outcomes.append(outcome)

    threads = [threading.Thread(target=client, name=f"bench-client-{i}") for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def poisson_arrivals(submit: Submit, rate: float, total: int, seed: int, first_index: int = 0) -> list[Outcome]:
    """Open loop: ``total`` requests at exponentially distributed gaps of mean ``1 / rate`` seconds, whatever the
    engine's state (a queue builds up when it cannot keep up, as with real traffic)."""
    gaps = np.random.default_rng(seed).exponential(1.0 / rate, size=total)
    start = time.perf_counter()
    pending: list[tuple[float, Future, dict[str, float]]] = []
    for offset, index in zip(np.cumsum(gaps), range(first_index, first_index + total)):
        delay = start + float(offset) - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        submitted = time.perf_counter()
        future = _start(submit, index)
        finished: dict[str, float] = {}
        future.add_done_callback(lambda _, box=finished: box.setdefault("at", time.perf_counter()))
        pending.append((submitted, future, finished))
    outcomes = []
    for submitted, future, finished in pending:
        outcome = _settle(future, submitted)
        outcome.finished = finished.get("at", outcome.finished)
        outcomes.append(outcome)
    return outcomes


def _start(submit: Submit, index: int) -> Future:
    """The request's future; a refusal at submission (a full queue, say) becomes a failed one."""
    try:
        return submit(index)
    except Exception as exc:
        failed: Future = Future()
        failed.set_exception(exc)
        return failed


def _settle(future: Future, submitted: float, deadline_s: float | None = None) -> Outcome:
    try:
        result = future.result(deadline_s)
    except TimeoutError:
        return Outcome(submitted, time.perf_counter(), error=f"{HUNG}: no answer within {deadline_s:g} s")
    except Exception as exc:  # counted and reported, never silently dropped
        return Outcome(submitted, time.perf_counter(), error=f"{type(exc).__name__}: {exc}")
    return Outcome(submitted, time.perf_counter(), result.num_images, dict(result.timings))
