"""SD3, Flux and PixArt-Σ on CUDA: the same images as diffusers, batched and alone, with the options that only
exist there (CUDA graphs over Flux's packed latents and per-key position ids, model offload with T5)."""

import numpy as np
import pytest
import torch

from baton import Engine, GenerationRequest
from baton.config import CompileConfig, OptimizationConfig
from tests.conftest import batching_engine, reference_pixels

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

REQUEST = GenerationRequest(prompt="a red fox", num_images=2, width=128, height=64, steps=4, seed=3,
                            output_format="np")


@pytest.mark.parametrize("model", ["tiny-sd3", "tiny-flux", "tiny-flux-schnell", "tiny-pixart"])
def test_each_family_equals_diffusers_on_cuda_float32(model):
    with Engine(models=model, device="cuda", dtype="float32") as engine:
        result = engine.generate(REQUEST, model=model)
        expected = reference_pixels(engine.runners[model], engine.resolve(REQUEST, model=model))
    assert float(np.abs(result.pixels - expected).max()) <= 1e-4


@pytest.mark.parametrize("model", ["tiny-sd3", "tiny-flux"])
def test_batched_requests_of_other_steps_and_guidance_match_on_cuda(model):
    requests = [GenerationRequest(prompt=p, seed=i, steps=3 + i, guidance_scale=1.0 + 2 * i, width=128,
                                  height=128, output_format="np", model=model)
                for i, p in enumerate(["a fox", "a whale", "a bird"])]
    with batching_engine(model, device="cuda", dtype="float32") as engine:
        results = [f.result(120) for f in [engine.submit(r) for r in requests]]
        assert max(r.timings["denoise"].batch_images for r in results) == 3
        for request, result in zip(requests, results):
            expected = reference_pixels(engine.runners[model], engine.resolve(request))
            assert float(np.abs(result.pixels - expected).max()) <= 1e-4


def test_bfloat16_flux_is_finite_and_close_to_diffusers():
    with Engine(models="tiny-flux", device="cuda", dtype="bfloat16") as engine:
        result = engine.generate(REQUEST)
        expected = reference_pixels(engine.runners["tiny-flux"], engine.resolve(REQUEST))
    assert np.isfinite(result.pixels).all()
    assert float(np.abs(result.pixels - expected).max()) <= 3e-2  # bfloat16: 8 mantissa bits


def test_cuda_graphs_replay_flux_with_its_position_ids():
    options = OptimizationConfig(cuda_graphs=True, compile=CompileConfig(batch_buckets=(2,), sizes=((128, 64),)))
    with Engine(models="tiny-flux", device="cuda", dtype="float32", optimizations=options) as engine:
        result = engine.generate(REQUEST)
        runner = engine.runners["tiny-flux"]
        assert runner.denoiser.bucketed_calls == REQUEST.steps and runner.denoiser.eager_calls == 0
        expected = reference_pixels(runner, engine.resolve(REQUEST))
    assert float(np.abs(result.pixels - expected).max()) <= 1e-4


@pytest.mark.parametrize("offload", ["model", "sequential"])
def test_offload_moves_t5_too(offload):
    with Engine(models="tiny-sd3", device="cuda", dtype="float32",
                optimizations=OptimizationConfig(offload=offload)) as engine:
        result = engine.generate(REQUEST)
        runner = engine.runners["tiny-sd3"]
        if offload == "model":
            assert next(runner.pipeline.text_encoder_3.parameters()).device.type == "cpu"
    with Engine(models="tiny-sd3", device="cuda", dtype="float32") as plain:
        expected = plain.generate(REQUEST).pixels
    assert float(np.abs(result.pixels - expected).max()) <= 1e-4


def test_the_transformer_step_loops_make_no_host_sync_on_cuda():
    from baton.bench.syncs import audit_cuda

    for result in audit_cuda(("tiny-sd3", "tiny-flux"), steps=3, size=128):
        in_loop = [sync for sync in result["syncs"] if sync["in_step_loop"]]
        assert in_loop == [], in_loop
