"""The router's choice and its recovery, with fake engine processes: milliseconds, no torch work."""

from __future__ import annotations

import time
from concurrent.futures import Future

import pytest

from baton.cluster import EngineLoad, Router, choose_engine, parse_devices
from baton.config import EngineConfig, RequestLimits
from baton.errors import EngineClosedError, EngineProcessLostError, QueueFullError
from baton.protocol import EngineHealth
from baton.request import GenerationRequest, GenerationResult
from baton.resolver import ModelSpec, RequestResolver

SPEC = ModelSpec(name="m", default_size=64, default_guidance_scale=5.0, max_size=512, schedulers=("default",),
                 unsupported_schedulers={}, sampler_max_steps={})
RESOLVER = RequestResolver(RequestLimits(), {"m": SPEC})


def load(index, work=0, pending=0, ready=True, stuck=False, models=("m",)) -> EngineLoad:
    return EngineLoad(index=index, ready=ready, stuck=stuck, models=frozenset(models), queued_pixel_steps=work,
                      pending=pending)


def test_the_least_outstanding_pixel_steps_wins_not_the_fewest_requests():
    # one 1024x1024 request outweighs three 256x256 ones
    loads = [load(0, work=1024 * 1024 * 30, pending=1), load(1, work=3 * 256 * 256 * 30, pending=3)]
    assert choose_engine(loads, "m") == 1


def test_engines_that_are_not_ready_stuck_or_without_the_model_are_skipped():
    loads = [load(0, ready=False), load(1, stuck=True), load(2, models=("other",)), load(3, work=10**9)]
    assert choose_engine(loads, "m") == 3
    assert choose_engine(loads[:3], "m") is None


def test_ties_go_to_fewer_requests_then_the_lower_index_every_time():
    loads = [load(0, work=5, pending=2), load(1, work=5, pending=1), load(2, work=5, pending=1)]
    assert [choose_engine(loads, "m") for _ in range(3)] == [1, 1, 1]  # never round-robin


def test_devices_parse_and_a_bad_list_names_the_flag():
    assert parse_devices("0,1") == ["cuda:0", "cuda:1"]
    assert parse_devices("cpu, cpu") == ["cpu", "cpu"]
    with pytest.raises(ValueError, match="`--devices`.*'0,gpu'"):
        parse_devices("0,gpu")


class FakeEngine:
    """What the router uses of a RemoteEngine; a test settles its futures and ends its process."""

    def __init__(self, config, *, name, threads, memory_fraction, on_exit, ready=True, limit=10**12) -> None:
        self.name, self.on_exit, self.limit = name, on_exit, limit
        self.state = "ready" if ready else "starting"
        self.resolver = RESOLVER if ready else None
        self.started_at = time.monotonic()
        self.ready_at = self.started_at if ready else None
        self.load_error = None
        self.pid = 1000 + len(name)
        self.sent: list[tuple[GenerationRequest, Future]] = []

    ready = property(lambda self: self.state == "ready")
    pending = property(lambda self: sum(not future.done() for _, future in self.sent))
    queued_pixel_steps = property(lambda self: sum(r.width * r.height * r.steps for r, f in self.sent if not f.done()))

    def wait_ready(self, timeout=None) -> bool:
        return self.ready

    def submit(self, request, events=None) -> Future:
        if self.queued_pixel_steps + request.width * request.height * request.steps > self.limit:
            raise QueueFullError("full")
        future: Future = Future()
        self.sent.append((request, future))
        return future

    def health(self) -> EngineHealth:
        return EngineHealth(pending=self.pending, stalled_s=0.0, dead=False)

    def stats(self) -> dict:
        return {"pending": self.pending, "queued_pixel_steps": self.queued_pixel_steps, "queued": {"denoise": 0},
                "denoising": 0, "prompt_cache": {}, "memory": None}

    def describe(self) -> dict:
        return {"models": [{"name": "m"}]}

    def close(self, drain=True, timeout=None) -> None:
        self.state = "closed"

    def die(self, started: bool) -> None:
        """The process is gone: what it held fails, as RemoteEngine fails it, and the router hears of it."""
        self.state = "dead"
        for _, future in self.sent:
            if not future.done():
                future.set_exception(EngineProcessLostError("killed", started=started))
        self.on_exit(self)


@pytest.fixture
def router():
    made: list[FakeEngine] = []

    def factory(config, **settings):
        made.append(FakeEngine(config, **settings))
        return made[-1]

    with Router(EngineConfig(models=("m",)), ["cpu", "cpu"], engine_factory=factory) as router:
        router.made = made
        yield router


def request(side=64, steps=10) -> GenerationRequest:
    return GenerationRequest(prompt="p", width=side, height=side, steps=steps)


def result() -> GenerationResult:
    return GenerationResult(request_id="r", seed=0, images=[])


def test_requests_go_to_the_engine_with_the_least_work(router):
    big = router.submit(request(side=256))
    small = [router.submit(request()) for _ in range(3)]
    first, second = router.engines
    assert len(first.sent) == 1 and len(second.sent) == 3  # 3 x 64² x 10 < 256² x 10
    second.sent[0][1].set_result(result())
    assert small[0].result(1).request_id == "r" and not big.done()


def retried_on(router, dead: FakeEngine) -> FakeEngine:
    """The live engine the retry went to (the other one, or the dead one's restarted successor)."""
    deadline = time.monotonic() + 5
    while True:
        taken = [engine for engine in router.made if engine is not dead and engine.sent]
        if taken:
            return taken[0]
        assert time.monotonic() < deadline, "the retry never went out"
        time.sleep(0.01)


def test_a_request_lost_before_denoising_is_retried_once_on_another_engine(router):
    first, _ = router.engines
    outer = router.submit(request())
    assert len(first.sent) == 1
    first.die(started=False)
    retried_on(router, first).sent[0][1].set_result(result())
    assert outer.result(1).request_id == "r"


def test_a_request_lost_while_denoising_fails_clearly_and_is_not_run_again(router):
    first, second = router.engines
    outer = router.submit(request())
    first.die(started=True)
    with pytest.raises(EngineProcessLostError) as error:
        outer.result(1)
    time.sleep(0.2)  # the supervisor's rounds: a retry would have gone out by now
    assert error.value.started and not second.sent and not any(engine.sent for engine in router.made[2:])


def test_a_retry_lost_again_is_not_retried_twice(router):
    first, _ = router.engines
    outer = router.submit(request())
    first.die(started=False)
    retried_on(router, first).die(started=False)
    with pytest.raises(EngineProcessLostError):
        outer.result(5)


def test_a_dead_engine_is_restarted_in_its_slot(router):
    first, _ = router.engines
    first.die(started=False)
    deadline = time.monotonic() + 5
    while router.engines[0] is first:
        assert time.monotonic() < deadline, "no restart"
        time.sleep(0.01)
    assert len(router.made) == 3 and router.stats()["engines"][0]["restarts"] == 1
    assert router.engines[0].ready and router.ready


def test_with_no_engine_ready_submit_refuses_at_once_and_readiness_is_red(router):
    for engine in router.engines:
        engine.state = "starting"
    assert not router.ready
    with pytest.raises(EngineClosedError, match="no engine process is ready"):
        router.submit(request())


def test_a_full_engine_is_a_synchronous_queue_full(router):
    for engine in router.engines:
        engine.limit = 64 * 64 * 10
    router.submit(request())
    router.submit(request())
    with pytest.raises(QueueFullError):
        router.submit(request())


def test_cancelling_the_routers_future_cancels_the_engines(router):
    outer = router.submit(request())
    inner = router.engines[0].sent[0][1]
    assert router.cancel(outer) and inner.cancelled()
    assert not router.cancel(outer)  # counted once


def test_stats_add_up_the_engines_and_show_each(router):
    router.submit(request())
    router.submit(request(side=128))
    stats = router.stats()
    assert stats["pending"] == 2 and stats["queued_pixel_steps"] == (64 * 64 + 128 * 128) * 10
    assert [each["name"] for each in stats["engines"]] == ["0:cpu", "1:cpu"]
    assert [each["pending"] for each in stats["engines"]] == [1, 1]
    assert router.describe()["router"]["engines"][1]["state"] == "ready"


def test_when_every_engine_fails_to_load_the_router_says_why():
    def failing(config, **settings):
        engine = FakeEngine(config, **settings, ready=False)
        engine.state, engine.load_error = "failed", "ModelLoadError: no model 'x'"
        return engine

    with pytest.raises(ValueError, match="no engine process could start: 0:cpu: ModelLoadError"):
        Router(EngineConfig(models=("m",)), ["cpu"], engine_factory=failing)
