"""SD3, Flux and PixArt-Σ (diffusion transformers) through the same stages: for the same seed, baton's images equal
the plain diffusers pipeline's, alone, batched with other steps and guidance, joining mid-run, from a saved folder,
and at a non-square size."""

from __future__ import annotations

from concurrent.futures import wait

import numpy as np
import pytest
import torch

from baton import Engine, GenerationRequest, InvalidRequestError
from baton.models.builtin import SPECS
from tests.conftest import assert_matches_reference, batching_engine
from tests.integration.test_step_batching import Requests

DIT_MODELS = ["tiny-sd3", "tiny-flux", "tiny-pixart"]
SMALL = dict(width=128, height=128, output_format="np")


@pytest.fixture(scope="module")
def dit_engine():
    with Engine(models=("tiny-sd3", "tiny-flux", "tiny-flux-schnell", "tiny-pixart"), device="cpu") as engine:
        yield engine


@pytest.mark.parametrize("model", [*DIT_MODELS, "tiny-flux-schnell"])
@pytest.mark.parametrize("size", [(128, 128), (192, 64)])
def test_alone_equals_diffusers(dit_engine, model, size):
    """The model's defaults (SD3: CFG 7.0 with an empty negative prompt; Flux-dev: guidance 3.5 embedded; schnell:
    none; PixArt-Σ: CFG 4.5, DPM-Solver++, learned variance dropped), at a square and a non-square size."""
    width, height = size
    request = GenerationRequest(prompt="a red circle on blue", model=model, steps=4, seed=5, num_images=2,
                                width=width, height=height, output_format="np")
    result = dit_engine.generate(request)
    assert result.pixels.shape == (2, height, width, 3)
    assert_matches_reference(dit_engine, result, request)


@pytest.mark.parametrize("model", DIT_MODELS)
def test_batching_with_other_steps_guidance_and_samplers_never_changes_a_result(model):
    """Four requests share every forward (one latent shape) though their steps, guidance and samplers differ: SD3
    with and without classifier-free guidance (4 rows and 1), Flux-dev with different embedded scales."""
    requests = [
        GenerationRequest(prompt="a red fox", seed=1, steps=4),
        GenerationRequest(prompt="a blue whale", seed=2, steps=6, num_images=2, guidance_scale=1.0),
        GenerationRequest(prompt="a yellow bird", seed=3, steps=3, guidance_scale=9.0, scheduler="heun"),
        GenerationRequest(prompt="a red fox", seed=4, steps=5, guidance_scale=2.0, scheduler="euler"),
    ]
    if model != "tiny-flux":
        requests[0] = GenerationRequest(prompt="a red fox", seed=1, steps=4, negative_prompt="blurry")
    else:  # Flux's samplers are default and euler (Heun has no resolution-dependent shift)
        requests[2] = _with(requests[2], scheduler="euler")
    requests = [_with(r, model=model, **SMALL) for r in requests]
    with batching_engine(model) as engine:
        futures = [engine.submit(r) for r in requests]
        wait(futures, timeout=120)
        results = [f.result() for f in futures]
        total_images = sum(r.num_images for r in requests)
        assert max(r.timings["denoise"].batch_images for r in results) == total_images, "requests did not batch"
        for request, result in zip(requests, results):
            assert_matches_reference(engine, result, request)


@pytest.mark.parametrize("model", DIT_MODELS)
def test_requests_that_join_mid_run_get_the_image_they_would_get_alone(model):
    a = GenerationRequest(prompt="a red fox", seed=1, steps=12, model=model, **SMALL)
    b = GenerationRequest(prompt="a blue whale", seed=2, steps=5, guidance_scale=1.0, num_images=2, model=model,
                          **SMALL)
    c = GenerationRequest(prompt="a yellow bird", seed=3, steps=6, guidance_scale=6.0, model=model, **SMALL)
    with Engine(models=model, device="cpu") as engine:
        run = Requests(engine)
        run.submit("a", a, on_steps=(run.at(3, lambda: run.submit("b", b)), run.at(6, lambda: run.submit("c", c))))
        results = run.results()
        trace = run.trace
        assert trace.steps_done_before("a", trace.first_step("b")) == 4
        assert trace.steps_done_before("a", trace.first_step("c")) == 7
        assert results["b"].timings["denoise"].batch_images > 2  # shared its forwards with A (and C)
        for name, request in (("a", a), ("b", b), ("c", c)):
            assert_matches_reference(engine, results[name], request)


@pytest.mark.parametrize("model", DIT_MODELS)
def test_a_saved_folder_loads_and_generates_the_same_images(tmp_path, model):
    folder = tmp_path / model
    SPECS[model].build(torch.device("cpu"), torch.float32).save_pretrained(folder)
    request = GenerationRequest(prompt="a red fox", seed=11, steps=3, width=192, height=64, output_format="np")
    with Engine(models=model, device="cpu") as builtin, Engine(models=str(folder), device="cpu") as loaded:
        runner = loaded.runners[str(folder)]
        assert runner.family == builtin.runners[model].family
        assert runner.default_size == builtin.runners[model].default_size
        expected = builtin.generate(request).pixels
        result = loaded.generate(request)
        assert_matches_reference(loaded, result, request)
    # loaded tensors are not 64-byte aligned, so CPU GEMMs may sum in another order: ~1e-6, not bitwise
    assert float(np.abs(result.pixels - expected).max()) <= 1e-5


@pytest.mark.parametrize("mode", ["staged", "stacked"])
@pytest.mark.parametrize("model", DIT_MODELS)
def test_previews_unpack_the_latents_in_both_modes(model, mode):
    """Flux keeps packed latents ([n, tokens, 4C]); a preview is still an [h, w, 3] image of the latent grid. The
    stacked baseline reports steps through the pipeline's callback (PixArt's pipeline has the older kind)."""
    previews = []
    with Engine(models=model, device="cpu", mode=mode) as engine:
        request = GenerationRequest(prompt="a red fox", model=model, steps=4, seed=3, width=192, height=64,
                                    output_format="np")
        result = engine.submit(request, preview=lambda done, total, rgb: previews.append((done, total, rgb)),
                               preview_every=2).result(60)
        assert_matches_reference(engine, result, request)
    assert [(done, total) for done, total, _ in previews] == [(2, 4)]
    assert previews[0][2].shape == (1, 64 // 8, 192 // 8, 3)


def test_a_folder_size_limit_must_be_a_multiple_the_model_takes(tmp_path):
    from baton.models import ModelLoadError, load_model

    SPECS["tiny-flux"].build(torch.device("cpu"), torch.float32).save_pretrained(tmp_path)
    (tmp_path / "baton.json").write_text('{"max_size": 264}')
    with pytest.raises(ModelLoadError, match="`max_size` in .*must be a multiple of 16 .*got 264"):
        load_model(str(tmp_path), torch.device("cpu"), torch.float32)


def test_request_checks_follow_the_family(dit_engine):
    """Sizes are multiples of 16 where a transformer takes 2x2 patches; Flux refuses a negative prompt and the
    samplers of noise-predicting models, each naming the field and why."""
    with pytest.raises(InvalidRequestError, match="`width` must be a multiple of 16 .*tiny-sd3"):
        dit_engine.resolve(prompt="x", model="tiny-sd3", width=136, height=128)
    with pytest.raises(InvalidRequestError, match="`negative_prompt` must be unset .*no negative branch"):
        dit_engine.resolve(prompt="x", model="tiny-flux", negative_prompt="blurry")
    with pytest.raises(InvalidRequestError, match="`scheduler` must be one of .*flow|samplers are"):
        dit_engine.resolve(prompt="x", model="tiny-flux", scheduler="ddim")
    assert dit_engine.resolve(prompt="x", model="tiny-flux-schnell").guidance_scale == 0.0
    assert dit_engine.resolve(prompt="x", model="tiny-flux").guidance_scale == 3.5
    assert dit_engine.resolve(prompt="x", model="tiny-sd3").guidance_scale == 7.0


def test_truncation_is_counted_against_t5(dit_engine):
    """T5 reads the most of a prompt (Flux: 512 tokens, SD3: 256), so a cut is reported against its limit."""
    runner = dit_engine.runners["tiny-flux"]
    given, read = runner.prompt_tokens("a" * 600)
    assert read == 511 and given >= 600


def _with(request: GenerationRequest, **fields) -> GenerationRequest:
    import dataclasses

    return dataclasses.replace(request, **fields)
