"""Guidance-distilled UNets (LCM-distilled SD1.5 and SDXL): the guidance scale is embedded per row
(``timestep_cond``) and classifier-free guidance is off, exactly as diffusers runs them, alone and batched."""

import dataclasses
from concurrent.futures import wait

import pytest

from baton import Engine, GenerationRequest, InvalidRequestError
from tests.conftest import assert_matches_reference, batching_engine

LCM_MODELS = ["tiny-lcm", "tiny-sdxl-lcm"]


@pytest.fixture(scope="module")
def lcm_engine():
    with Engine(models=(*LCM_MODELS, "tiny-sd15"), device="cpu") as engine:
        yield engine


@pytest.mark.parametrize("model", LCM_MODELS)
@pytest.mark.parametrize("scheduler", ["default", "euler_a"])
def test_a_guidance_distilled_model_equals_diffusers(lcm_engine, model, scheduler):
    request = GenerationRequest(prompt="a red fox", num_images=2, width=64, height=64, steps=4, seed=0,
                                guidance_scale=8.5, scheduler=scheduler, model=model, output_format="np")
    result = lcm_engine.generate(request)
    assert result.timings["denoise"].batch_images == 2  # one row per image: no unconditional rows
    assert_matches_reference(lcm_engine, result, request)


def test_the_guidance_scale_changes_the_image(lcm_engine):
    """The embedding reaches the UNet: two scales, same seed, different images (it was ignored before)."""
    low, high = (lcm_engine.generate(prompt="a red fox", model="tiny-lcm", width=64, height=64, steps=4, seed=0,
                                     guidance_scale=scale, output_format="np").pixels for scale in (1.5, 12.0))
    assert abs(low - high).max() > 1e-3


@pytest.mark.parametrize("model", LCM_MODELS)
def test_requests_with_different_guidance_share_a_forward_and_each_equals_diffusers(model):
    requests = [
        GenerationRequest(prompt="a red fox", seed=1, steps=4, guidance_scale=1.0),
        GenerationRequest(prompt="a blue whale", seed=2, steps=6, guidance_scale=8.5, num_images=2),
        GenerationRequest(prompt="a yellow bird", seed=3, steps=3, guidance_scale=3.0, scheduler="lcm"),
    ]
    requests = [dataclasses.replace(r, model=model, width=64, height=64, output_format="np") for r in requests]
    with batching_engine(model) as engine:
        futures = [engine.submit(r) for r in requests]
        wait(futures, timeout=120)
        results = [f.result() for f in futures]
        assert max(r.timings["denoise"].batch_images for r in results) == 4, "requests did not batch"
        for request, result in zip(requests, results):
            assert_matches_reference(engine, result, request)


def test_a_distilled_and_a_plain_model_share_the_engine(lcm_engine):
    """The plain model keeps classifier-free guidance (two rows per image), the distilled one embeds it."""
    plain = GenerationRequest(prompt="a cat", model="tiny-sd15", width=64, height=64, steps=3, seed=5,
                              guidance_scale=7.5, scheduler="lcm", output_format="np")
    distilled = GenerationRequest(prompt="a cat", model="tiny-lcm", width=64, height=64, steps=3, seed=5,
                                  guidance_scale=7.5, output_format="np")
    futures = [lcm_engine.submit(r) for r in (plain, distilled)]
    for request, future in zip((plain, distilled), futures):
        assert_matches_reference(lcm_engine, future.result(120), request)
    assert not lcm_engine.runners["tiny-sd15"].uses_guidance(1.0) and lcm_engine.runners["tiny-sd15"].uses_guidance(7.5)
    assert not lcm_engine.runners["tiny-lcm"].uses_guidance(7.5)


def test_lcm_refuses_more_steps_than_it_was_distilled_on(lcm_engine):
    with pytest.raises(InvalidRequestError, match="`steps` must be at most 50 with scheduler 'default'"):
        lcm_engine.submit(prompt="a cat", model="tiny-lcm", steps=51)
    with pytest.raises(InvalidRequestError, match="`steps` must be at most 50 with scheduler 'lcm'"):
        lcm_engine.submit(prompt="a cat", model="tiny-sd15", scheduler="lcm", steps=60)
