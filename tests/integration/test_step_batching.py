"""Step-level batching on a real engine: requests join a running batch between steps, and nothing about a
request's image depends on what it was batched with."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from baton import DenoiseConfig, Engine, GenerationRequest
from tests.conftest import assert_matches_reference

SMALL = dict(width=64, height=64, output_format="np")


def denoise_inbox(engine: Engine):
    return engine._executor.denoiser.inbox


def wait_until_queued_at_denoise(engine: Engine, count: int = 1, timeout: float = 30.0) -> None:
    """Block (the denoiser, when called from a progress callback) until ``count`` requests wait at its queue, so
    they join at the very next step boundary: a deterministic mid-run join."""
    deadline = time.monotonic() + timeout
    while denoise_inbox(engine).qsize() < count:
        if time.monotonic() > deadline:
            raise TimeoutError("the request never reached the denoiser")
        time.sleep(0.001)


class Trace:
    """Every progress callback, in order: (request name, steps done)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int]] = []
        self._lock = threading.Lock()

    def callback(self, name: str, *on_steps: Callable[[int], None]):
        def progress(done: int, total: int) -> None:
            with self._lock:
                self.events.append((name, done))
            for on_step in on_steps:
                on_step(done)

        return progress

    def first_step(self, name: str) -> int:
        return next(i for i, (who, done) in enumerate(self.events) if who == name and done == 1)

    def steps_done_before(self, name: str, index: int) -> int:
        """How many steps ``name`` had done when event ``index`` happened."""
        return max(done for who, done in self.events[:index] if who == name)

    def last_step(self, name: str) -> int:
        return max(i for i, (who, _) in enumerate(self.events) if who == name)


class Requests:
    """Requests submitted by name, their progress traced; :meth:`at` makes more join a running batch."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.trace = Trace()
        self.futures: dict = {}

    def submit(self, name: str, request: GenerationRequest | None = None, *,
               on_steps: tuple[Callable[[int], None], ...] = (), **fields) -> None:
        self.futures[name] = self.engine.submit(request, progress=self.trace.callback(name, *on_steps), **fields)

    def at(self, step: int, *submissions: Callable[[], None]) -> Callable[[int], None]:
        """A progress callback: at ``step``, run ``submissions`` and hold the denoiser until they wait at its
        queue, so they join at the very next step boundary (a deterministic mid-run join)."""

        def on_step(done: int) -> None:
            if done == step:
                for submit in submissions:
                    submit()
                wait_until_queued_at_denoise(self.engine, count=len(submissions))

        return on_step

    def results(self, timeout: float = 120) -> dict:
        """Every result by name (requests submitted from callbacks exist once their parent has run)."""
        done = {}
        while len(done) < len(self.futures):
            for name in list(self.futures):
                done[name] = self.futures[name].result(timeout)
        return done


@pytest.mark.parametrize("model", ["tiny-sd15", "tiny-sdxl"])
def test_requests_that_join_mid_run_get_the_image_they_would_get_alone(model):
    """B joins at A's step 4 and C at A's step 9; they differ in steps, guidance (B: none, so no unconditional
    row), sampler and image count. Each equals its own plain diffusers run."""
    a = GenerationRequest(prompt="a red fox", seed=1, steps=24, scheduler="euler", model=model, **SMALL)
    b = GenerationRequest(prompt="a blue whale", seed=2, steps=8, guidance_scale=1.0, scheduler="ddim",
                          num_images=2, model=model, **SMALL)
    c = GenerationRequest(prompt="a yellow bird", seed=3, steps=10, guidance_scale=4.0, scheduler="dpmpp_2m",
                          negative_prompt="blurry", model=model, **SMALL)
    with Engine(models=model, device="cpu") as engine:
        run = Requests(engine)
        run.submit("a", a, on_steps=(run.at(4, lambda: run.submit("b", b)), run.at(9, lambda: run.submit("c", c))))
        results = run.results()
        trace = run.trace

        # they really joined a running batch: each took its first step in A's forward right after it arrived
        assert trace.steps_done_before("a", trace.first_step("b")) == 5
        assert trace.steps_done_before("a", trace.first_step("c")) == 10
        assert results["b"].timings["denoise"].batch_images > 2  # shared its forwards with A (and C)
        assert 1 < results["a"].timings["denoise"].batch_images < 1 + 2 + 1
        for name, request in (("a", a), ("b", b), ("c", c)):
            assert_matches_reference(engine, results[name], request)


def test_request_level_batching_lets_no_one_join_a_running_batch():
    with Engine(models="tiny-sd15", device="cpu", denoise=DenoiseConfig(batching="request")) as engine:
        run = Requests(engine)
        join = run.at(3, lambda: run.submit("b", prompt="b", steps=5, seed=2, **SMALL))
        run.submit("a", prompt="a", steps=12, seed=1, on_steps=(join,), **SMALL)
        b = run.results()["b"]
    assert run.trace.first_step("b") > run.trace.last_step("a")  # B waited for A's whole batch
    assert b.timings["denoise"].batch_images == 1


def test_priority_decides_who_takes_the_rows_that_free_up():
    """With room for one guided image per forward, A runs; low and high wait (low queued first). When A is done,
    high goes first and runs to the end before low starts."""
    with Engine(models="tiny-sd15", device="cpu", denoise=DenoiseConfig(max_rows=2)) as engine:
        run = Requests(engine)
        queue_two = run.at(2, lambda: run.submit("low", prompt="low", steps=4, priority=0, **SMALL),
                           lambda: run.submit("high", prompt="high", steps=4, priority=5, **SMALL))
        run.submit("a", prompt="a", steps=10, on_steps=(queue_two,), **SMALL)
        run.results(60)
    assert run.trace.last_step("a") < run.trace.first_step("high")
    assert run.trace.last_step("high") < run.trace.first_step("low")


def test_requests_of_different_sizes_take_turns_on_the_denoiser():
    """A 96x64 request arriving while a 64x64 one runs cannot share its forwards; it does not wait for it to end
    either: the two sizes alternate, one forward each."""
    with Engine(models="tiny-sd15", device="cpu") as engine:
        run = Requests(engine)
        wide = run.at(3, lambda: run.submit("wide", prompt="wide", steps=5, width=96, height=64, scheduler="euler"))
        run.submit("square", prompt="square", steps=20, scheduler="euler", width=64, height=64, on_steps=(wide,))
        assert run.results(60)["wide"].images[0].size == (96, 64)
    trace = run.trace
    start, end = trace.first_step("wide"), trace.last_step("wide")
    assert [who for who, _ in trace.events[start - 1 : end + 1]] == ["square", "wide"] * 5


@pytest.mark.parametrize("model", ["tiny-sd15", "tiny-sdxl"])
def test_a_batched_denoiser_forward_equals_each_request_alone_bitwise(model):
    """Three requests' rows (2, 1 and 2, at different timesteps) in one forward give each request what its rows
    give alone, bitwise: the batch-variant layers run per request (baton.models.invariance)."""
    import torch

    from baton.models import load_model
    from baton.models.types import Conditioning

    runner = load_model(model, torch.device("cpu"), torch.float32)
    unet = runner.pipeline.unet
    generator = torch.Generator().manual_seed(0)
    rows = [2, 1, 2]
    latents = torch.randn(5, unet.config.in_channels, 8, 8, generator=generator)
    timesteps = torch.tensor([901, 901, 40, 333, 333])
    hidden = torch.randn(5, 77, unet.config.cross_attention_dim, generator=generator)
    added = {}
    if unet.config.addition_embed_type == "text_time":
        text_dim = unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim
        added = {"text_embeds": torch.randn(5, text_dim, generator=generator),
                 "time_ids": torch.randn(5, 6, generator=generator)}
    with torch.inference_mode():
        batched = runner.predict(latents, timesteps, Conditioning(hidden, added), rows)
        start = 0
        for count in rows:
            part = slice(start, start + count)
            alone = runner.predict(latents[part], timesteps[part],
                                   Conditioning(hidden[part], {k: v[part] for k, v in added.items()}), [count])
            if count > 1:
                assert torch.equal(batched[part], alone)
            else:  # a convolution over a batch of one may take another algorithm (measured: ~1e-6 here)
                assert (batched[part] - alone).abs().max() <= 1e-5
            start += count


def test_a_request_joining_its_size_does_not_cost_the_other_size_its_turn():
    """While a 64x64 and a 96x64 request alternate, another 64x64 request joins: the rotation stays one forward
    each (a joiner takes its key's turn instead of counting as a fresh arrival)."""
    with Engine(models="tiny-sd15", device="cpu") as engine:
        run = Requests(engine)
        joiner = run.at(2, lambda: run.submit("joiner", prompt="joiner", steps=4, width=64, height=64,
                                              scheduler="euler"))
        wide = run.at(3, lambda: run.submit("wide", prompt="wide", steps=8, width=96, height=64, scheduler="euler",
                                            on_steps=(joiner,)))
        run.submit("square", prompt="square", steps=20, scheduler="euler", width=64, height=64, on_steps=(wide,))
        run.results(60)
    trace = run.trace
    wide_steps = [i for i, (who, _) in enumerate(trace.events) if who == "wide"]
    square_done = [trace.steps_done_before("square", i) for i in wide_steps]
    assert [b - a for a, b in zip(square_done, square_done[1:])] == [1] * 7  # one square forward between each
    assert trace.first_step("joiner") < wide_steps[-1]  # the joiner ran inside that window
