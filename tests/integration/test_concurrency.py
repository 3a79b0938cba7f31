"""Many callers at once: every request completes with its own, correct result."""

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from baton import Engine, GenerationRequest
from baton.config import DenoiseConfig
from tests.conftest import TOLERANCE, reference_pixels


def test_16_requests_from_8_threads_all_complete_correctly():
    prompts = ["a red fox", "a blue whale", "a green frog", "a white cat"]
    requests = [
        GenerationRequest(prompt=prompts[i % 4], seed=100 + i, steps=3 + i % 3, num_images=1 + i % 2, width=64,
                          height=64, scheduler=("euler", "ddim")[i % 2], output_format="np")
        for i in range(16)
    ]
    with Engine(models="tiny-sd15", device="cpu", denoise=DenoiseConfig(max_rows=16)) as engine:
        barrier = threading.Barrier(8)

        def client(indices):
            barrier.wait()  # all eight threads submit at the same moment
            futures = [engine.submit(requests[i]) for i in indices]
            return [(i, f.result(timeout=120)) for i, f in zip(indices, futures)]

        with ThreadPoolExecutor(8) as pool:
            outcomes = [pair for chunk in pool.map(client, [range(t, 16, 8) for t in range(8)]) for pair in chunk]

        assert sorted(i for i, _ in outcomes) == list(range(16))
        assert len({result.request_id for _, result in outcomes}) == 16
        runner = engine.runners["tiny-sd15"]
        for i, result in outcomes:
            request = engine.resolve(requests[i])
            assert result.seed == request.seed and len(result.images) == request.num_images
            assert float(np.abs(result.pixels - reference_pixels(runner, request)).max()) <= TOLERANCE
        assert engine.pending == 0


def test_generate_async_and_cancellation_of_the_awaiting_task(sd15_engine):
    async def scenario():
        ok = await sd15_engine.generate_async(prompt="a fox", width=64, height=64, steps=2, seed=0)
        slow = asyncio.ensure_future(sd15_engine.generate_async(prompt="slow", width=64, height=64, steps=200))
        await asyncio.sleep(0.2)
        slow.cancel()
        try:
            await slow
        except asyncio.CancelledError:
            pass
        return ok, slow

    ok, slow = asyncio.run(scenario())
    assert len(ok.images) == 1 and slow.cancelled()
    # the cancelled request's work was dropped, and the engine still serves
    assert sd15_engine.generate(prompt="next", width=64, height=64, steps=2, seed=1).images
    assert sd15_engine.pending == 0


def test_progress_callback_reports_every_step_and_a_raising_one_is_ignored(sd15_engine):
    seen = []
    sd15_engine.generate(prompt="a", width=64, height=64, steps=4, scheduler="euler",
                         progress=lambda d, t: seen.append((d, t)))
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]

    def broken(done, total):
        raise RuntimeError("callback bug")

    result = sd15_engine.generate(prompt="a", width=64, height=64, steps=3, progress=broken)
    assert len(result.images) == 1


def test_previews_arrive_every_k_steps_and_stats_count_what_is_in_flight():
    previews = []
    with Engine(models="tiny-sdxl", device="cpu") as engine:
        stats = engine.stats()
        assert stats["memory"]["device"] == "cpu" and stats["memory"]["bytes"] > 1e7
        assert {key: value for key, value in stats.items() if key != "memory"} == {
            "pending": 0, "queued_pixel_steps": 0, "queued": {"denoise": 0, "image_encode": 0}, "denoising": 0,
            "prompt_cache": {}}
        result = engine.submit(prompt="a fox", steps=7, width=64, height=64, num_images=2, seed=1,
                               preview=lambda done, total, rgb: previews.append((done, total, rgb)),
                               preview_every=3).result(60)
    assert [(done, total) for done, total, _ in previews] == [(3, 7), (6, 7)]  # not at the end: the image follows
    assert all(rgb.shape == (2, 8, 8, 3) and rgb.dtype.name == "uint8" for _, _, rgb in previews)
    assert result.images[0].size == (64, 64)
