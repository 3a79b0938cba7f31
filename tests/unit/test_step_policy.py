"""The denoiser's step-level policy, with plain objects: no torch, milliseconds."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from baton.scheduling import Running, StepPolicy, Waiting


def waiting(name, key="a", rows=2, at=0.0, priority=0):
    return Waiting(item=name, key=key, size=rows, arrived_at=at, priority=priority)


def running(name, key="a", rows=2, last=0.0):
    return Running(item=name, key=key, rows=rows, last_ran_at=last)


def admitted(decision):
    return [w.item for w in decision.admit]


def test_nothing_to_do():
    decision = StepPolicy(max_rows=16).plan([], [], now=0.0)
    assert decision.admit == [] and decision.run_key is None and decision.wait_s is None


def test_idle_denoiser_admits_first_come_first_served_up_to_max_rows():
    queue = [waiting(f"r{i}", at=i * 0.01) for i in range(10)]
    decision = StepPolicy(max_rows=8).plan([], queue, now=1.0)
    assert admitted(decision) == ["r0", "r1", "r2", "r3"] and decision.run_key == "a"


def test_requests_join_a_running_batch_between_steps():
    decision = StepPolicy(max_rows=8).plan([running("old", rows=4)], [waiting("new", rows=2, at=0.5)], now=1.0)
    assert admitted(decision) == ["new"] and decision.run_key == "a"


def test_request_level_batching_admits_nothing_while_a_batch_runs():
    policy = StepPolicy(max_rows=8, join_running=False)
    decision = policy.plan([running("old", rows=2)], [waiting("new", at=0.5)], now=1.0)
    assert decision.admit == [] and decision.run_key == "a"
    # once the batch is done, the next forms from the top-ranked request's key only
    queue = [waiting("b1", key="b", at=0.1), waiting("a1", at=0.2), waiting("b2", key="b", at=0.3)]
    decision = policy.plan([], queue, now=1.0)
    assert admitted(decision) == ["b1", "b2"] and decision.run_key == "b"


def test_higher_priority_is_admitted_first():
    queue = [waiting("low", rows=8, at=0.0), waiting("high", rows=8, at=0.5, priority=2)]
    assert admitted(StepPolicy(max_rows=8).plan([], queue, now=0.6)) == ["high"]


def test_each_priority_level_counts_as_aging_period_of_waiting():
    policy = StepPolicy(max_rows=8, priority_aging_s=1.0)
    # two levels up, arrived 1.5 s later: it counts as 0.5 s earlier, and ranks first
    assert admitted(policy.plan([], [waiting("low", rows=8), waiting("high", rows=8, at=1.5, priority=2)], 9.0)) == [
        "high"
    ]
    # arrived 2.5 s later: two levels are not enough to overtake
    assert admitted(policy.plan([], [waiting("low", rows=8), waiting("high", rows=8, at=2.5, priority=2)], 9.0)) == [
        "low"
    ]


def test_a_request_that_does_not_fit_closes_its_key_to_those_ranked_below():
    batch = [running("r", rows=12)]
    queue = [waiting("big", rows=8, at=0.1), waiting("small", rows=2, at=0.2), waiting("other", key="b", at=0.3)]
    decision = StepPolicy(max_rows=16).plan(batch, queue, now=1.0)
    assert admitted(decision) == ["other"]  # `small` would fit but may not overtake `big`; key b has room


def test_a_request_larger_than_max_rows_runs_alone_once_its_key_is_idle():
    queue = [waiting("huge", rows=32, at=0.0), waiting("small", rows=2, at=0.1)]
    policy = StepPolicy(max_rows=16)
    assert admitted(policy.plan([running("r", rows=2)], queue, now=1.0)) == []
    assert admitted(policy.plan([], queue, now=1.0)) == ["huge"]


def test_keys_take_turns_least_recently_run_first():
    policy = StepPolicy(max_rows=16)
    batch = [running("a1", key="a", last=2.0), running("a2", key="a", last=2.0), running("b1", key="b", last=1.0)]
    assert policy.plan(batch, [], now=3.0).run_key == "b"
    # a key with nothing running yet counts from its arrival
    decision = policy.plan(batch, [waiting("c1", key="c", at=0.5)], now=3.0)
    assert admitted(decision) == ["c1"] and decision.run_key == "c"


def test_an_idle_denoiser_waits_up_to_max_wait_for_a_fuller_batch():
    policy = StepPolicy(max_rows=8, max_wait_s=0.1)
    queue = [waiting("r0", at=1.0), waiting("r1", at=1.02)]
    early = policy.plan([], queue, now=1.06)
    assert early.admit == [] and early.run_key is None and early.wait_s == pytest.approx(0.04)
    assert admitted(policy.plan([], queue, now=1.1)) == ["r0", "r1"]  # waited long enough
    assert admitted(policy.plan([], queue, now=1.06, flush=True)) == ["r0", "r1"]  # shutting down
    full = [waiting(f"r{i}", at=1.0) for i in range(4)]
    assert len(policy.plan([], full, now=1.0).admit) == 4  # full: no reason to wait
    # a busy denoiser never waits: the request joins at once
    assert admitted(policy.plan([running("r", last=1.05)], queue, now=1.06)) == ["r0", "r1"]


# -- no starvation: a small simulation of the denoiser loop ----------------------------------------------------------
@dataclass
class FakeRequest:
    name: str
    key: str
    rows: int
    arrived_at: float
    priority: int = 0
    steps: int = 20
    done_steps: int = 0
    last_ran_at: float = 0.0
    admitted_at: float | None = None
    finished_at: float | None = None


def simulate(policy: StepPolicy, arrivals: list[FakeRequest], until: float, forward_s: float = 0.01):
    """Run the policy as the denoiser would, one forward per ``forward_s``; return the requests by name."""
    pending = sorted(arrivals, key=lambda r: r.arrived_at)
    waiting_list: list[FakeRequest] = []
    active: list[FakeRequest] = []
    now = 0.0
    while now < until:
        while pending and pending[0].arrived_at <= now:
            waiting_list.append(pending.pop(0))
        decision = policy.plan(
            [Running(r, r.key, r.rows, r.last_ran_at) for r in active],
            [Waiting(r, r.key, r.rows, r.arrived_at, r.priority) for r in waiting_list],
            now,
        )
        for entry in decision.admit:
            waiting_list.remove(entry.item)
            active.append(entry.item)
            entry.item.admitted_at = entry.item.last_ran_at = now
        for request in [r for r in active if r.key == decision.run_key]:
            request.done_steps += 1
            request.last_ran_at = now
            if request.done_steps == request.steps:
                request.finished_at = now
                active.remove(request)
        now += forward_s
    return {r.name: r for r in arrivals}


def flood(key="a", priority=0, rows=2, until=6.0, every=0.0125):
    """Twice what the denoiser serves (16 rows / 2 per request, 20 steps of 0.01 s: one request per 0.025 s)."""
    return [FakeRequest(f"{key}{i}", key, rows, i * every, priority) for i in range(int(until / every))]


def test_a_low_priority_request_is_not_starved_by_an_overload_of_high_priority_ones():
    # Under strict priority this request would wait as long as the overload lasts. Here it is admitted before
    # every high-priority request that arrived more than 3 levels x 0.5 s after it.
    low = FakeRequest("low", "a", rows=2, arrived_at=1.0, priority=0)
    flood_requests = flood(priority=3)
    served = simulate(StepPolicy(max_rows=16, priority_aging_s=0.5), flood_requests + [low], until=12.0)
    assert served["low"].finished_at is not None
    low_admitted = served["low"].admitted_at
    overtaken_by = [r for r in flood_requests if r.admitted_at is not None and r.admitted_at < low_admitted]
    assert overtaken_by and max(r.arrived_at for r in overtaken_by) <= low.arrived_at + 3 * 0.5
    assert any(r.arrived_at > low.arrived_at + 3 * 0.5 for r in flood_requests)  # the flood went on past that


def test_a_large_request_is_not_starved_by_an_overload_of_small_ones():
    big = FakeRequest("big", "a", rows=16, arrived_at=1.0)
    flood_requests = flood(rows=2)
    served = simulate(StepPolicy(max_rows=16), flood_requests + [big], until=12.0)
    assert served["big"].finished_at is not None
    # first come, first served: nobody who arrived after it was admitted before it
    assert all(r.admitted_at is None or r.admitted_at >= served["big"].admitted_at
               for r in flood_requests if r.arrived_at > big.arrived_at)


def test_a_request_of_another_size_is_not_starved_by_an_overload_of_one_size():
    other = FakeRequest("other", "b", rows=2, arrived_at=1.0)
    served = simulate(StepPolicy(max_rows=16), flood() + [other], until=3.0)
    # admitted at once (its key has room) and run turn about with the flood's key: 2 x 20 forwards
    assert served["other"].admitted_at == pytest.approx(1.0)
    assert served["other"].finished_at == pytest.approx(1.0 + 2 * 20 * 0.01 - 0.02, abs=0.011)


def test_at_equal_priority_requests_finish_in_arrival_order():
    served = simulate(StepPolicy(max_rows=16), flood(until=1.0), until=5.0)
    by_finish = sorted(served.values(), key=lambda r: (r.finished_at, r.arrived_at))
    assert all(r.finished_at is not None for r in by_finish)
    assert [r.name for r in by_finish] == [r.name for r in sorted(served.values(), key=lambda r: r.arrived_at)]
