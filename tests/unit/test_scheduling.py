"""The batching policy, with plain objects: no torch, milliseconds."""

from baton.scheduling import Waiting, plan_batch


def waiting(name, key="a", size=1, at=0.0):
    return Waiting(item=name, key=key, size=size, arrived_at=at)


def names(decision):
    return [w.item for w in decision.batch]


def test_nothing_waiting_means_nothing_to_run():
    decision = plan_batch([], now=1.0, max_size=4, max_wait_s=0.1)
    assert decision.batch == [] and decision.wait_s is None


def test_full_batch_runs_at_once_in_arrival_order():
    queue = [waiting(f"r{i}", at=0.0) for i in range(6)]
    assert names(plan_batch(queue, now=0.0, max_size=4, max_wait_s=10.0)) == ["r0", "r1", "r2", "r3"]


def test_partial_batch_waits_until_the_oldest_has_waited_max_wait():
    queue = [waiting("r0", at=1.0), waiting("r1", at=1.05)]
    early = plan_batch(queue, now=1.06, max_size=4, max_wait_s=0.1)
    assert early.batch == [] and abs(early.wait_s - 0.04) < 1e-9
    assert names(plan_batch(queue, now=1.1, max_size=4, max_wait_s=0.1)) == ["r0", "r1"]


def test_zero_wait_runs_whatever_is_there():
    assert names(plan_batch([waiting("r0")], now=0.0, max_size=8, max_wait_s=0.0)) == ["r0"]


def test_flush_runs_a_partial_batch_immediately():
    assert names(plan_batch([waiting("r0", at=5.0)], now=5.0, max_size=8, max_wait_s=60.0, flush=True)) == ["r0"]


def test_only_requests_with_the_oldest_requests_key_join():
    queue = [waiting("a0", "a"), waiting("b0", "b"), waiting("a1", "a"), waiting("b1", "b")]
    assert names(plan_batch(queue, now=0.0, max_size=8, max_wait_s=0.0)) == ["a0", "a1"]


def test_sizes_count_and_an_overflowing_request_keeps_its_place():
    queue = [waiting("r0", size=3), waiting("big", size=4), waiting("r2", size=1)]
    assert names(plan_batch(queue, now=0.0, max_size=4, max_wait_s=0.0)) == ["r0", "r2"]


def test_a_request_larger_than_the_limit_still_runs_alone():
    queue = [waiting("huge", size=16), waiting("small", size=1)]
    assert names(plan_batch(queue, now=0.0, max_size=8, max_wait_s=0.0)) == ["huge"]


def test_no_request_starves_behind_a_stream_of_compatible_ones():
    """Whatever keeps arriving, the oldest request is always in the next batch."""
    queue = [waiting("old", "x", at=0.0)] + [waiting(f"new{i}", "y", at=1.0 + i) for i in range(50)]
    for round_ in range(3):
        batch = names(plan_batch(queue, now=100.0, max_size=2, max_wait_s=0.0))
        assert batch[0] == queue[0].item
        queue = [w for w in queue if w.item not in batch]
        queue.append(waiting(f"later{round_}", "y", at=200.0 + round_))
    assert "old" not in [w.item for w in queue]
