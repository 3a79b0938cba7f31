"""Engine processes for real: the same images as an engine in this process, and recovery from ``kill -9``."""

from __future__ import annotations

import time

import numpy as np
import pytest

from baton import Engine
from baton.cluster import RemoteEngine, Router
from baton.config import EngineConfig
from baton.errors import EngineProcessLostError, InvalidRequestError
from baton.protocol import RequestEvents

CONFIG = EngineConfig(models=("tiny-sd15",), device="cpu")
REQUEST = {"prompt": "a red fox", "steps": 3, "width": 64, "height": 64, "seed": 7}


def test_an_engine_process_makes_the_images_an_in_process_engine_makes():
    remote = RemoteEngine(CONFIG, name="0:cpu", threads=1)
    try:
        assert remote.wait_ready(120), remote.load_error
        heard: dict[str, list] = {"accepted": [], "progress": []}
        events = RequestEvents(progress=lambda done, total: heard["progress"].append(done),
                               accepted=heard["accepted"].append)
        far = remote.submit(remote.resolve(**REQUEST, output_format="np"), events).result(60)
        png = remote.submit(remote.resolve(**REQUEST)).result(60)
        with pytest.raises(InvalidRequestError, match="`steps`"):  # checked on this side, before it is sent
            remote.submit(remote.resolve(**{**REQUEST, "steps": 0}))
    finally:
        remote.close()
    near_progress: list[int] = []
    with Engine(CONFIG) as engine:
        near = engine.submit(**REQUEST, output_format="np",
                             progress=lambda done, total: near_progress.append(done)).result(60)
        near_png = engine.generate(**REQUEST)
    assert np.abs(far.pixels - near.pixels).max() <= 1e-5  # thread counts differ: CPU sums may reorder
    assert heard == {"accepted": [[]], "progress": near_progress} and len(near_progress) >= 3
    assert far.images == [] and (png.width, png.height, png.num_images) == (64, 64, 1)
    assert png.encoded[0][:8] == near_png.encoded[0][:8] == b"\x89PNG\r\n\x1a\n"
    assert remote.state == "closed" and not remote.alive


@pytest.mark.timeout(240)
def test_kill_9_under_load_loses_nothing_silently_and_the_engine_is_back_within_30_s():
    with Router(CONFIG, ["cpu", "cpu"]) as router:
        for engine in router.engines:  # both loaded: the kill must hit a serving engine, not a loading one
            assert engine.wait_ready(120)
        victim = router.engines[0]
        work = {**REQUEST, "steps": 30, "width": 128, "height": 128}  # ~0.3 s each: the kill lands mid-run
        futures = [router.submit(router.resolve(**{**work, "seed": seed})) for seed in range(16)]
        deadline = time.monotonic() + 30
        while router.stats()["engines"][0]["denoising"] in (None, 0):  # kill it mid-denoising
            assert time.monotonic() < deadline
            time.sleep(0.01)
        killed_at = time.monotonic()
        victim.kill()
        served, lost = 0, 0
        for future in futures:
            try:
                future.result(120)
                served += 1
            except EngineProcessLostError as error:  # the only failure allowed: it says it was denoising
                assert error.started and "SIGKILL" in str(error)
                lost += 1
        assert served + lost == len(futures) and served >= 8 and lost >= 1
        while not router.engines[0].ready:  # a new process in the victim's slot
            assert time.monotonic() - killed_at < 30, "the engine was not back within 30 s"
            time.sleep(0.1)
        assert router.engines[0] is not victim and router.stats()["engines"][0]["restarts"] == 1
        again = [router.submit(router.resolve(**REQUEST)) for _ in range(2)]
        assert all(future.result(60).num_images == 1 for future in again)
        assert router.stats()["engines"][0]["pending"] == 0
