"""The load generators, against a fake target whose requests take a known time: counts and concurrency."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from types import SimpleNamespace

from baton.bench.workload import closed_loop, poisson_arrivals
from baton.errors import QueueFullError


class FakeTarget:
    """Serves each request after ``service_s`` on a pool; records how many were in flight at once."""

    def __init__(self, service_s: float = 0.01, refuse: set[int] | None = None) -> None:
        self.pool = ThreadPoolExecutor(16)
        self.service_s = service_s
        self.refuse = refuse or set()
        self.in_flight = self.most_in_flight = 0
        self.seen: list[int] = []
        self.lock = threading.Lock()

    def submit(self, index: int) -> Future:
        if index in self.refuse:
            raise QueueFullError("the engine is full")
        with self.lock:
            self.seen.append(index)
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        return self.pool.submit(self._serve)

    def _serve(self):
        time.sleep(self.service_s)
        with self.lock:
            self.in_flight -= 1
        return SimpleNamespace(num_images=1, timings={})


def test_closed_loop_sends_every_request_once_with_at_most_c_in_flight():
    target = FakeTarget()
    outcomes = closed_loop(target.submit, clients=3, total=10, first_index=100)
    assert sorted(target.seen) == list(range(100, 110))
    assert len(outcomes) == 10 and all(o.error is None and o.images == 1 for o in outcomes)
    assert target.most_in_flight == 3
    assert all(o.latency_s >= 0.01 for o in outcomes)


def test_poisson_arrivals_keep_their_schedule_and_record_refusals():
    target = FakeTarget(service_s=0.05, refuse={2})
    started = time.perf_counter()
    outcomes = poisson_arrivals(target.submit, rate=200.0, total=12, seed=0)
    assert len(outcomes) == 12
    assert [o.error for o in outcomes].count("QueueFullError: the engine is full") == 1
    assert target.most_in_flight > 1  # open loop: arrivals do not wait for earlier requests
    assert time.perf_counter() - started < 5
