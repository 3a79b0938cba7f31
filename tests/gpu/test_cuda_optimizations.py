"""Optimizations that only exist on CUDA: offload, CUDA graphs, reduce-overhead, text encoders in host memory."""

import dataclasses

import numpy as np
import pytest
import torch

from baton import Engine, GenerationRequest
from baton.config import CompileConfig, OptimizationConfig, PromptCacheConfig
from baton.optim import preset_config

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

REQUEST = GenerationRequest(prompt="a red fox", num_images=2, width=64, height=64, steps=4, seed=3,
                            scheduler="euler", output_format="np")


def generate(options: OptimizationConfig, model: str = "tiny-sdxl", dtype: str = "float32", **fields):
    with Engine(models=model, device="cuda", dtype=dtype, optimizations=options, **fields) as engine:
        torch.cuda.reset_peak_memory_stats()
        result = engine.generate(REQUEST)
        return result.pixels, engine.runners[model], torch.cuda.max_memory_allocated()


@pytest.fixture(scope="module")
def plain():
    return generate(OptimizationConfig())[0]


@pytest.mark.parametrize("offload", ["model", "sequential"])
def test_offload_keeps_the_images(plain, offload):
    pixels, runner, _ = generate(OptimizationConfig(offload=offload))
    assert float(np.abs(pixels - plain).max()) <= 1e-4
    if offload == "model":
        assert runner.optimized.offload.moves >= 3 and runner.optimized.offload.active == "vae"
        assert next(runner.pipeline.unet.parameters()).device.type == "cpu"  # off the device once it is done


@pytest.mark.compile
def test_cuda_graphs_over_compiled_buckets_match_eager(plain, tmp_path):
    options = OptimizationConfig(cuda_graphs=True, compile=CompileConfig(enabled=True, batch_buckets=(2, 4),
                                                                         sizes=((64, 64),), cache_dir=str(tmp_path)))
    pixels, runner, _ = generate(options)
    assert runner.denoiser.eager_calls == 0 and runner.denoiser.bucketed_calls == REQUEST.steps
    assert float(np.abs(pixels - plain).max()) <= 1e-3  # inductor's kernels round differently


def test_cuda_graphs_without_compile(plain):
    options = OptimizationConfig(cuda_graphs=True, compile=CompileConfig(batch_buckets=(4,), sizes=((64, 64),)))
    pixels, runner, _ = generate(options)
    assert runner.denoiser.bucketed_calls == REQUEST.steps
    assert float(np.abs(pixels - plain).max()) <= 1e-4


def test_text_encoders_in_host_memory_after_precomputing(plain):
    cache = PromptCacheConfig(max_bytes=2**20, precompute=(REQUEST.prompt,), text_encoders_on_cpu=True)
    pixels, runner, _ = generate(OptimizationConfig(prompt_cache=cache))
    assert next(runner.pipeline.text_encoder.parameters()).device.type == "cpu"
    assert runner.prompt_cache.stats()["hits"] == 1
    assert float(np.abs(pixels - plain).max()) <= 1e-4


@pytest.mark.parametrize("preset", [pytest.param("fast", marks=pytest.mark.compile), "low-memory",
                                    pytest.param("max-throughput", marks=pytest.mark.compile)])
def test_cuda_presets_run(preset, tmp_path):
    config = preset_config(preset, "cuda")
    options = config.optimizations
    if options.compile.enabled:  # keep the warm-up short: two buckets at the request's size
        options = dataclasses.replace(options, compile=dataclasses.replace(
            options.compile, batch_buckets=(2, 4), sizes=((64, 64),), cache_dir=str(tmp_path)))
        config = dataclasses.replace(config, optimizations=options, denoise=dataclasses.replace(
            config.denoise, max_rows=4))
    with Engine(config, models="tiny-sd15", device="cuda") as engine:
        result = engine.generate(REQUEST)
    assert np.isfinite(result.pixels).all() and result.pixels.shape == (2, 64, 64, 3)
