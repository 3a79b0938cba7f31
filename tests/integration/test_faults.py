"""Faults and shutdown: a broken batch fails alone, close() never leaves a future pending."""

import threading
import time
from concurrent.futures import CancelledError, wait

import pytest

from baton import Engine, EngineClosedError, EngineDeadError, QueueFullError, StageError
from baton.config import DenoiseConfig
from baton.protocol import EngineHealth
from tests.conftest import batching_engine


def _slow(prompt="slow", steps=60, **fields):
    return dict(prompt=prompt, width=64, height=64, steps=steps, **fields)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize(("method", "stage"), [("decode", "vae_decode"), ("encode_prompts", "text_encode")])
def test_a_stage_that_raises_fails_only_its_batch_and_keeps_serving(method, stage, fused):
    with batching_engine(fused_stages=fused) as engine:
        runner = engine.runners["tiny-sd15"]
        original = getattr(runner, method)
        calls = {"n": 0}

        def flaky(*args):
            calls["n"] += 1
            if calls["n"] == 1:
                raise RuntimeError("injected failure")
            return original(*args)

        setattr(runner, method, flaky)
        first = [engine.submit(prompt=f"p{i}", width=64, height=64, steps=2, seed=i) for i in range(3)]
        wait(first, timeout=60)
        errors = [f.exception() for f in first]
        assert all(isinstance(e, StageError) and e.stage == stage for e in errors)
        assert "injected failure" in str(errors[0]) and isinstance(errors[0].__cause__, RuntimeError)

        later = engine.submit(prompt="after", width=64, height=64, steps=2, seed=9)
        assert len(later.result(60).images) == 1
        assert engine.pending == 0 and not engine.dead


def test_close_with_drain_finishes_everything_in_flight():
    engine = Engine(models="tiny-sd15", device="cpu")
    futures = [engine.submit(**_slow(steps=5, seed=i)) for i in range(6)]
    engine.close()
    assert all(f.done() for f in futures)
    assert all(len(f.result().images) == 1 for f in futures)


def test_close_without_drain_leaves_nothing_pending():
    engine = Engine(models="tiny-sd15", device="cpu")
    futures = [engine.submit(**_slow(seed=i)) for i in range(6)]
    time.sleep(0.3)  # the first batch is mid-denoise
    started = time.perf_counter()
    engine.close(drain=False)
    assert time.perf_counter() - started < 30  # dropped at the next step boundary, not run to the end
    assert all(f.done() for f in futures)
    failed = [f for f in futures if isinstance(f.exception(), EngineClosedError)]
    assert failed, "nothing was cancelled"
    assert engine.pending == 0
    with pytest.raises(EngineClosedError):
        engine.submit(prompt="late", width=64, height=64)


def test_close_with_timeout_fails_what_did_not_finish():
    engine = Engine(models="tiny-sd15", device="cpu")
    futures = [engine.submit(**_slow(steps=150, seed=i)) for i in range(3)]
    engine.close(timeout=0.5)
    assert all(f.done() for f in futures)
    assert any(isinstance(f.exception(), EngineClosedError) for f in futures)


def test_a_cancelled_future_is_dropped_and_frees_the_denoiser(sd15_engine):
    future = sd15_engine.submit(**_slow(steps=200))
    time.sleep(0.2)
    assert future.cancel()
    with pytest.raises(CancelledError):
        future.result()
    started = time.perf_counter()
    assert sd15_engine.generate(prompt="next", width=64, height=64, steps=2).images
    assert time.perf_counter() - started < 30


def test_a_second_close_waits_for_the_first():
    engine = Engine(models="tiny-sd15", device="cpu")
    future = engine.submit(**_slow(steps=40))
    closing = threading.Thread(target=engine.close)  # drains: the request runs to its end
    closing.start()
    while not engine.closed:
        time.sleep(0.001)
    engine.close()  # returns only once the first has finished, with nothing pending
    assert future.done() and engine.pending == 0
    closing.join(60)


def test_admission_is_bounded():
    with Engine(models="tiny-sd15", device="cpu", max_queue=2) as engine:
        held = [engine.submit(**_slow(steps=20, seed=i)) for i in range(2)]
        with pytest.raises(QueueFullError, match="max_queue"):
            engine.submit(**_slow())
        wait(held, timeout=60)
        assert engine.generate(prompt="now there is room", width=64, height=64, steps=2).images


def test_a_dead_worker_fails_everything_and_refuses_new_work():
    engine = Engine(models="tiny-sd15", device="cpu", denoise=DenoiseConfig(max_wait_s=0.0))
    denoise = engine._executor.denoiser

    def broken_key(job):  # a bug in the mechanism, outside any batch: the worker itself dies
        raise RuntimeError("scheduler bug")

    denoise.batch_key = broken_key
    future = engine.submit(prompt="doomed", width=64, height=64, steps=2)
    with pytest.raises(EngineDeadError, match="scheduler bug"):
        future.result(timeout=60)
    assert engine.dead
    with pytest.raises(EngineDeadError):
        engine.submit(prompt="after death", width=64, height=64)
    engine.close(timeout=5)
    assert engine.pending == 0
    assert engine._executor.image_stage.pool._shutdown  # close() still shut the image-encoding pool down


def test_work_is_bounded_in_pixel_steps_and_an_empty_engine_takes_any_request():
    with Engine(models="tiny-sd15", device="cpu", max_queued_pixel_steps=64 * 64 * 20) as engine:
        assert engine.health() == EngineHealth(pending=0, stalled_s=0.0, dead=False)
        big = engine.submit(prompt="big", width=128, height=128, steps=20)  # 4x the limit, into an empty engine
        with pytest.raises(QueueFullError, match="max_queued_pixel_steps"):
            engine.submit(prompt="small", width=64, height=64, steps=1)
        assert engine.stats()["queued_pixel_steps"] == 128 * 128 * 20
        big.result(timeout=60)
        assert engine.stats()["queued_pixel_steps"] == 0
        assert engine.generate(prompt="now there is room", width=64, height=64, steps=20).images


def test_a_full_first_queue_refuses_at_once_instead_of_blocking_the_caller():
    # (a blocking submit would wait for room and never refuse: the refusals are the proof)
    with Engine(models="tiny-sd15", device="cpu", stage_queue_size=1, max_queue=100) as engine:
        accepted, refused = [], 0
        for i in range(30):
            try:
                accepted.append(engine.submit(prompt=f"p{i}", steps=20, width=64, height=64))
            except QueueFullError:
                refused += 1
        results = [future.result(120) for future in accepted]
    assert refused > 0 and len(accepted) + refused == 30
    assert all(result.images for result in results)  # everything accepted was served
