"""For the same seed, baton's images equal the plain diffusers pipeline's, alone and when batched."""

from concurrent.futures import wait

import pytest

from baton import Engine, GenerationRequest
from tests.conftest import assert_matches_reference, batching_engine


@pytest.mark.parametrize("model", ["tiny-sd15", "tiny-sdxl"])
@pytest.mark.parametrize("scheduler", ["euler", "ddim"])
@pytest.mark.parametrize("num_images", [1, 3])
def test_staged_equals_diffusers(sd15_engine, model, scheduler, num_images):
    request = GenerationRequest(
        prompt="a red fox in the snow", negative_prompt="blurry", num_images=num_images, width=64, height=96,
        steps=4, seed=7, scheduler=scheduler, model=model, output_format="np",
    )
    result = sd15_engine.generate(request)
    assert len(result.images) == num_images and result.images[0].size == (64, 96)
    assert_matches_reference(sd15_engine, result, request)


@pytest.mark.parametrize("model", ["tiny-sd15", "tiny-sdxl"])
def test_model_defaults_match_diffusers_defaults(sd15_engine, model):
    """No negative prompt, the model's default scheduler and guidance (SDXL: zeroed negative embeddings)."""
    request = GenerationRequest(prompt="two green squares", steps=3, seed=1, model=model, output_format="np",
                                width=64, height=64)
    assert_matches_reference(sd15_engine, sd15_engine.generate(request), request)


@pytest.mark.parametrize("model", ["tiny-sd15", "tiny-sdxl"])
def test_batching_never_changes_a_result(model):
    """Requests differing in prompt, seed, image count, steps, guidance (with and without CFG), sampler and
    negative prompt share batches in every stage, and each still equals its own diffusers run."""
    requests = [
        GenerationRequest(prompt="a red fox", seed=1, steps=4, scheduler="euler"),
        GenerationRequest(prompt="a blue whale", seed=2, steps=6, num_images=2, scheduler="ddim",
                          negative_prompt="ugly"),
        GenerationRequest(prompt="a yellow bird", seed=3, steps=3, guidance_scale=1.0, scheduler="euler"),
        GenerationRequest(prompt="a red fox", seed=4, steps=5, guidance_scale=9.0, scheduler="default"),
    ]
    requests = [_with(r, model=model, width=64, height=64, output_format="np") for r in requests]
    with batching_engine(model) as engine:
        futures = [engine.submit(r) for r in requests]
        wait(futures, timeout=120)
        results = [f.result() for f in futures]
        total_images = sum(r.num_images for r in requests)
        assert max(r.timings["denoise"].batch_images for r in results) == total_images, "requests did not batch"
        assert max(r.timings["text_encode"].batch_images for r in results) == total_images
        for request, result in zip(requests, results):
            assert_matches_reference(engine, result, request)


def test_requests_of_different_sizes_batch_separately(sd15_engine):
    with batching_engine() as engine:
        small = engine.submit(prompt="a", width=64, height=64, steps=2, seed=0)
        large = engine.submit(prompt="b", width=96, height=64, steps=2, seed=0)
        assert small.result(60).timings["denoise"].batch_images == 1
        assert large.result(60).timings["denoise"].batch_images == 1
        assert large.result().images[0].size == (96, 64)


def test_stacked_mode_runs_the_plain_pipeline():
    request = GenerationRequest(prompt="a cat", width=64, height=64, steps=3, seed=5, num_images=2,
                                scheduler="euler", output_format="np")
    with Engine(models="tiny-sdxl", mode="stacked", device="cpu") as engine:
        result = engine.generate(request)
        assert set(result.timings) == {"pipeline", "image_encode"}
        assert_matches_reference(engine, result, request)


def _with(request: GenerationRequest, **fields) -> GenerationRequest:
    import dataclasses

    return dataclasses.replace(request, **fields)


def test_a_models_own_sampler_that_baton_does_not_list_draws_its_noise_as_diffusers_does():
    """A folder configured with DDPM (which adds noise at every step): the step noise is routed like the listed
    samplers' and the image still equals diffusers'."""
    from diffusers import DDPMScheduler

    from baton.models.builtin import SD15_SCHEDULER
    from baton.models.schedulers import SchedulerFactory

    with Engine(models="tiny-sd15", device="cpu") as engine:
        runner = engine.runners["tiny-sd15"]
        # (clip_sample off, as StableDiffusionPipeline rewrites it in the scheduler of a folder it loads)
        ddpm = DDPMScheduler.from_config({**SD15_SCHEDULER, "clip_sample": False})
        runner.schedulers = SchedulerFactory(ddpm, runner.scheduler_config_fixes)
        request = GenerationRequest(prompt="a red fox", width=64, height=64, steps=4, seed=5, output_format="np")
        assert_matches_reference(engine, engine.generate(request), request)
