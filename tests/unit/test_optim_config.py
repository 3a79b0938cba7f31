"""Optimization options: validation, device checks, presets. No model is loaded here."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from baton.config import CompileConfig, EngineConfig, OptimizationConfig, PromptCacheConfig
from baton.optim import PRESETS, check_optimizations, preset_config

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: OptimizationConfig(attention="fast"), "`attention` must be one of"),
        (lambda: OptimizationConfig(offload="disk"), "`offload` must be one of"),
        (lambda: OptimizationConfig(vae_dtype="float8"), "`vae_dtype` must be one of"),
        (lambda: OptimizationConfig(attention="classic", fuse_qkv=True), "`fuse_qkv` needs an SDPA attention"),
        (lambda: CompileConfig(enabled=True, mode="reduce-overhead"), "`compile.mode` must be one of"),
        (lambda: CompileConfig(vae=True), "`compile.vae` needs `compile.enabled`"),
        (lambda: CompileConfig(enabled=True, vae=True, warmup=False), "`compile.vae` needs `compile.warmup`"),
        (lambda: OptimizationConfig(offload="model", compile=CompileConfig(enabled=True)),
         "`offload` cannot be combined with compile"),
        (lambda: CompileConfig(batch_buckets=(0, 2)), "`compile.batch_buckets` must be positive"),
        (lambda: CompileConfig(mode="turbo"), "`compile.mode` must be one of"),
        (lambda: PromptCacheConfig(precompute=("a",)), "`prompt_cache.precompute` needs a cache"),
        (lambda: PromptCacheConfig(max_bytes=-1), "`prompt_cache.max_bytes` must be >= 0"),
        (lambda: EngineConfig(optimizations=OptimizationConfig(offload="model"), fused_stages=False),
         "`fused_stages` must not be False with `offload`"),
        (lambda: EngineConfig(optimizations=OptimizationConfig(cuda_graphs=True), batch_invariant=True),
         "`batch_invariant` cannot be combined with compile or CUDA graphs"),
    ],
)
def test_invalid_options_name_the_field(build, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        build()


def test_compile_buckets_are_sorted_and_unique():
    assert CompileConfig(batch_buckets=(8, 1, 2, 8)).batch_buckets == (1, 2, 8)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (OptimizationConfig(cuda_graphs=True), "`cuda_graphs` needs a CUDA device"),
        (OptimizationConfig(offload="model"), "`offload` 'model' moves models off a GPU"),
        (OptimizationConfig(offload="sequential"), "`offload` 'sequential' moves models off a GPU"),
        (OptimizationConfig(attention="efficient"), "`attention` 'efficient' is a CUDA kernel"),
        (OptimizationConfig(attention="cudnn"), "`attention` 'cudnn' is a CUDA kernel"),
        (OptimizationConfig(text_encoder_dtype="float16"), "`text_encoder_dtype` 'float16' is not supported"),
        (OptimizationConfig(vae_dtype="float16"), "`vae_dtype` 'float16' is not supported"),
        (OptimizationConfig(prompt_cache=PromptCacheConfig(max_bytes=1, text_encoders_on_cpu=True)),
         "`prompt_cache.text_encoders_on_cpu` needs a CUDA device"),
    ],
)
def test_what_cannot_apply_on_a_cpu_is_refused(options, message):
    with pytest.raises(ValueError, match=message):
        check_optimizations(EngineConfig(optimizations=options), CPU)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        (OptimizationConfig(compile=CompileConfig(enabled=True)), "compile.enabled"),
        (OptimizationConfig(prompt_cache=PromptCacheConfig(max_bytes=1)), "prompt_cache.max_bytes"),
        (OptimizationConfig(text_encoder_dtype="bfloat16"), "text_encoder_dtype"),
        (OptimizationConfig(vae_dtype="float32"), "vae_dtype"),
        (OptimizationConfig(attention="math"), "attention"),
    ],
)
def test_staged_only_options_are_refused_in_stacked_mode(options, field):
    with pytest.raises(ValueError, match=f"`{field}` applies to the staged engine"):
        check_optimizations(EngineConfig(mode="stacked", optimizations=options), CPU)


def test_what_applies_on_a_cpu_passes():
    options = OptimizationConfig(attention="flash", vae_slicing=True, vae_tiling=True, fuse_qkv=True,
                                 text_encoder_dtype="bfloat16", vae_dtype="bfloat16", vae="tiny",
                                 compile=CompileConfig(enabled=True),
                                 prompt_cache=PromptCacheConfig(max_bytes=2**20, precompute=("a cat",)))
    check_optimizations(EngineConfig(optimizations=options), CPU)


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("device_type", ["cpu", "cuda"])
def test_presets_are_named_overrides_valid_for_their_device(preset, device_type):
    config = preset_config(preset, device_type, EngineConfig(models=("tiny-sdxl",), max_queue=7))
    assert config.optimizations.preset == preset
    assert config.models == ("tiny-sdxl",) and config.max_queue == 7  # everything else is kept
    if device_type == "cpu":
        check_optimizations(config, CPU)  # a CPU preset never asks for what a CPU cannot do
    options = config.optimizations
    if preset == "baseline":
        assert dataclasses.replace(options, preset=None) == OptimizationConfig()
    if preset in ("fast", "max-throughput"):
        assert options.fuse_qkv and options.prompt_cache.max_bytes > 0
        # compile was slower than eager on the CPU it was measured on
        assert options.compile.enabled == options.cuda_graphs == (device_type == "cuda")
    if preset == "low-memory":
        assert options.vae_slicing and options.vae_tiling
        assert options.offload == ("model" if device_type == "cuda" else "none")
    if preset == "max-throughput":
        assert options.vae == "tiny" and config.denoise.max_rows == 32
        assert max(options.compile.batch_buckets) >= config.denoise.max_rows


def test_an_unknown_preset_is_refused():
    with pytest.raises(ValueError, match="`preset` must be one of"):
        preset_config("turbo", "cpu")
