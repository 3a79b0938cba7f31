"""The same guarantees on CUDA: streams, events and the single host copy must not change any result."""

import numpy as np
import pytest
import torch

from baton import Engine, GenerationRequest
from tests.conftest import batching_engine, reference_pixels

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


@pytest.mark.parametrize("model", ["tiny-sd15", "tiny-sdxl"])
@pytest.mark.parametrize("scheduler", ["euler", "ddim"])
def test_staged_equals_diffusers_on_cuda_float32(model, scheduler):
    request = GenerationRequest(prompt="a red fox", num_images=3, width=64, height=64, steps=4, seed=7,
                                scheduler=scheduler, output_format="np")
    with Engine(models=model, device="cuda", dtype="float32") as engine:
        result = engine.generate(request)
        expected = reference_pixels(engine.runners[model], engine.resolve(request))
    # cuBLAS may pick other kernels than for diffusers' own batch shapes: TF32 is off in float32 by default.
    assert float(np.abs(result.pixels - expected).max()) <= 1e-4


def test_batched_requests_on_cuda_match_their_references():
    requests = [GenerationRequest(prompt=p, seed=i, steps=3 + i, width=64, height=64, output_format="np")
                for i, p in enumerate(["a fox", "a whale", "a bird"])]
    with batching_engine("tiny-sd15", device="cuda", dtype="float32") as engine:
        futures = [engine.submit(r) for r in requests]
        results = [f.result(120) for f in futures]
        assert max(r.timings["denoise"].batch_images for r in results) == 3
        for request, result in zip(requests, results):
            expected = reference_pixels(engine.runners["tiny-sd15"], engine.resolve(request))
            assert float(np.abs(result.pixels - expected).max()) <= 1e-4


def test_float16_generation_is_finite_and_close_to_diffusers():
    request = GenerationRequest(prompt="a red fox", width=64, height=64, steps=4, seed=1, output_format="np")
    with Engine(models="tiny-sdxl", device="cuda", dtype="float16") as engine:
        result = engine.generate(request)
        expected = reference_pixels(engine.runners["tiny-sdxl"], engine.resolve(request))
    assert np.isfinite(result.pixels).all()
    # float16 is compared loosely on purpose (half the mantissa); the float32 tests hold the strict bound
    assert float(np.abs(result.pixels - expected).max()) <= 2e-2


def test_a_request_joining_mid_run_on_cuda_matches_its_reference():
    """Step-level joining with stage streams and events: B enters A's running batch at A's step 3."""
    from tests.integration.test_step_batching import Requests

    a = GenerationRequest(prompt="a fox", seed=1, steps=12, scheduler="euler", width=64, height=64,
                          output_format="np")
    b = GenerationRequest(prompt="a whale", seed=2, steps=5, scheduler="ddim", guidance_scale=1.0, num_images=2,
                          width=64, height=64, output_format="np")
    with Engine(models="tiny-sd15", device="cuda", dtype="float32") as engine:
        run = Requests(engine)
        run.submit("a", a, on_steps=(run.at(3, lambda: run.submit("b", b)),))
        results, trace = run.results(), run.trace
        assert trace.steps_done_before("a", trace.first_step("b")) == 4
        for name, request in (("a", a), ("b", b)):
            expected = reference_pixels(engine.runners["tiny-sd15"], engine.resolve(request))
            assert float(np.abs(results[name].pixels - expected).max()) <= 1e-4


@pytest.mark.parametrize("model", ["tiny-lcm", "tiny-sdxl-lcm"])
def test_a_guidance_distilled_model_on_cuda_matches_diffusers(model):
    request = GenerationRequest(prompt="a red fox", num_images=2, width=64, height=64, steps=4, seed=2,
                                guidance_scale=8.5, output_format="np")
    with Engine(models=model, device="cuda", dtype="float32") as engine:
        result = engine.generate(request)
        expected = reference_pixels(engine.runners[model], engine.resolve(request))
    assert float(np.abs(result.pixels - expected).max()) <= 1e-4


def test_the_step_loop_makes_no_host_sync_on_cuda():
    """torch's own sync detector over one request per sampler: nothing in admission or the steps waits."""
    from baton.bench.syncs import audit_cuda

    results = audit_cuda(("tiny-sd15", "tiny-sdxl-lcm"), steps=3, size=64)
    for result in results:
        in_loop = [sync for sync in result["syncs"] if sync["in_step_loop"]]
        assert in_loop == [], in_loop
