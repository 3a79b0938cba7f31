"""Each option on a diffusion transformer (SD3, Flux): applied where it makes sense, refused with its reason where
it does not, and images unchanged where the option is lossless."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from baton import Engine, GenerationRequest
from baton.config import CompileConfig, OptimizationConfig, PromptCacheConfig
from tests.conftest import assert_matches_reference

DIT_MODELS = ["tiny-sd3", "tiny-flux"]
REQUEST = GenerationRequest(prompt="a red fox in the snow", steps=3, seed=11, width=128, height=64, num_images=2,
                            output_format="np")


def generate(options: OptimizationConfig, model: str, request: GenerationRequest = REQUEST):
    with Engine(models=model, device="cpu", optimizations=options) as engine:
        result = engine.generate(request, model=model)
        return result, engine.describe()["models"][0], engine


@pytest.fixture(scope="module")
def plain_pixels():
    return {model: generate(OptimizationConfig(), model)[0].pixels for model in DIT_MODELS}


@pytest.mark.parametrize("model", DIT_MODELS)
@pytest.mark.parametrize(
    ("options", "tolerance", "reported"),
    # (1e-5, not 0: two engines' weights lie at other addresses, and CPU GEMMs may sum in another order)
    [
        (OptimizationConfig(attention="sdpa"), 1e-5, "joint attention keeps"),
        (OptimizationConfig(attention="math"), 1e-5, "math backend only"),
        (OptimizationConfig(fuse_qkv=True), 1e-5, "fused QKV"),
        (OptimizationConfig(channels_last=True), 1e-5, "vae; the denoiser is a transformer"),
        (OptimizationConfig(vae_slicing=True), 1e-5, "vae slicing"),
        (OptimizationConfig(vae_tiling=True), 1e-5, "vae tiling"),  # below the tile size: no seams
        (OptimizationConfig(prompt_cache=PromptCacheConfig(max_bytes=2**22)), 1e-5, "prompt cache"),
        (OptimizationConfig(text_encoder_dtype="bfloat16"), 0.05, "text encoders in bfloat16"),
        (OptimizationConfig(vae_dtype="bfloat16"), 0.05, "vae in bfloat16"),
    ],
)
def test_each_option_is_applied_and_reported(plain_pixels, model, options, tolerance, reported):
    result, described, _ = generate(options, model)
    assert any(reported in line for line in described["optimizations"]), described["optimizations"]
    difference = float(np.abs(result.pixels - plain_pixels[model]).max())
    assert difference <= tolerance, difference
    if tolerance >= 0.05:
        assert difference > 0  # a lower precision really ran


@pytest.mark.parametrize("model", DIT_MODELS)
def test_joint_attention_keeps_its_processors_and_the_options_match_diffusers(model):
    options = OptimizationConfig(attention="math", vae_slicing=True, prompt_cache=PromptCacheConfig(max_bytes=2**22))
    with Engine(models=model, device="cpu", optimizations=options) as engine:
        runner = engine.runners[model]
        processors = {type(p).__name__ for p in runner.denoiser_module.attn_processors.values()}
        assert processors == ({"JointAttnProcessor2_0"} if model == "tiny-sd3" else {"FluxAttnProcessor"})
        assert {type(p).__name__ for p in runner.vae.attn_processors.values()} == {"AttnProcessor2_0"}
        result = engine.generate(REQUEST)
        assert_matches_reference(engine, result, REQUEST)  # the reference pipeline shares the optimized modules


@pytest.mark.parametrize("model", DIT_MODELS)
def test_fused_qkv_really_fuses_the_projections(model):
    with Engine(models=model, device="cpu", optimizations=OptimizationConfig(fuse_qkv=True)) as engine:
        layers = list(engine.runners[model].denoiser_module.modules())
        assert any(getattr(layer, "fused_projections", False) for layer in layers)
        assert any(hasattr(layer, "to_qkv") for layer in layers)


@pytest.mark.parametrize("model", DIT_MODELS)
def test_half_precision_reaches_every_text_encoder_t5_included(model):
    with Engine(models=model, device="cpu", optimizations=OptimizationConfig(text_encoder_dtype="bfloat16")) as engine:
        runner = engine.runners[model]
        encoders = {name for name in runner.pipeline.components if name.startswith("text_encoder")}
        assert encoders == ({"text_encoder", "text_encoder_2", "text_encoder_3"} if model == "tiny-sd3"
                            else {"text_encoder", "text_encoder_2"})
        assert all(str(encoder.dtype) == "torch.bfloat16" for encoder in runner.text_encoders())
        assert any(type(encoder).__name__ == "T5EncoderModel" for encoder in runner.text_encoders())


def test_float16_text_encoders_keep_t5s_overflowing_layers_in_float32():
    """T5's feed-forward output overflows in float16; transformers keeps it in float32 at load, and so does the
    option. (The engine refuses float16 on a CPU, so the option's function is called directly here.)"""
    from baton.models import load_model
    from baton.optim.precision import set_text_encoder_dtype

    runner = load_model("tiny-flux", torch.device("cpu"), torch.float32)
    line = set_text_encoder_dtype(runner, torch.float16)
    t5 = runner.pipeline.text_encoder_2
    dtypes = {name: module.weight.dtype for name, module in t5.named_modules() if name.endswith(("wo", "wi_0"))}
    assert {dtype for name, dtype in dtypes.items() if name.endswith("wo")} == {torch.float32}
    assert {dtype for name, dtype in dtypes.items() if name.endswith("wi_0")} == {torch.float16}
    assert runner.pipeline.text_encoder.dtype == torch.float16  # CLIP has no such layers
    assert "T5EncoderModel wo kept in float32" in line


@pytest.mark.parametrize("model", DIT_MODELS)
def test_the_prompt_cache_keeps_the_t5_encoding(model):
    """T5 is the costly encoder of SD3 and Flux: a repeated prompt skips every encoder, T5 included."""
    options = OptimizationConfig(prompt_cache=PromptCacheConfig(max_bytes=2**22))
    with Engine(models=model, device="cpu", optimizations=options) as engine:
        first = engine.generate(REQUEST)
        second = engine.generate(REQUEST)
        stats = engine.runners[model].prompt_cache.stats()
        assert stats["hits"] == 1 and stats["misses"] == 1
        assert np.array_equal(first.pixels, second.pixels)


@pytest.mark.parametrize("model", DIT_MODELS)
def test_classic_attention_is_refused_for_joint_attention(model):
    with pytest.raises(ValueError, match="`attention` 'classic' has no variant for joint attention"):
        Engine(models=model, device="cpu", optimizations=OptimizationConfig(attention="classic"))


@pytest.mark.parametrize(
    ("options", "refusal"),
    [
        (OptimizationConfig(offload="model"), "`offload` 'model' moves models off a GPU"),
        (OptimizationConfig(prompt_cache=PromptCacheConfig(max_bytes=2**20, text_encoders_on_cpu=True)),
         "`prompt_cache.text_encoders_on_cpu` needs a CUDA device"),
        (OptimizationConfig(cuda_graphs=True, compile=CompileConfig(warmup=True)), "`cuda_graphs` needs a CUDA"),
    ],
)
def test_cuda_only_options_are_refused_on_a_cpu_with_the_reason(options, refusal):
    with pytest.raises(ValueError, match=refusal):
        Engine(models="tiny-flux", device="cpu", optimizations=options)


@pytest.mark.parametrize("model", DIT_MODELS)
def test_the_tiny_autoencoder_for_16_channel_latents(model):
    """``vae: tiny`` picks the family's tiny autoencoder (taesd3 / taef1 shapes: 16 latent channels)."""
    result, described, engine = generate(OptimizationConfig(vae="tiny"), model)
    expected = "taesd3" if model == "tiny-sd3" else "taef1"
    assert any(f"vae replaced by {expected}" in line for line in described["optimizations"])
    assert result.pixels.shape == (2, 64, 128, 3)


def test_compiled_buckets_over_packed_flux_latents_match_eager_and_never_recompile(tmp_path, plain_pixels):
    """Flux's latents are packed ([rows, tokens, 4C]): the buckets key on that shape, its position ids are
    per-key inputs, and nothing compiles while serving."""
    from torch._dynamo.utils import counters

    options = OptimizationConfig(compile=CompileConfig(enabled=True, batch_buckets=(2,), sizes=((128, 64),),
                                                       cache_dir=str(tmp_path)))
    with Engine(models="tiny-flux", device="cpu", optimizations=options) as engine:
        runner = engine.runners["tiny-flux"]
        graphs_after_warm_up = counters["stats"]["unique_graphs"]
        result = engine.generate(REQUEST)
        assert counters["stats"]["unique_graphs"] == graphs_after_warm_up  # no compile while serving
        assert runner.denoiser.eager_calls == 0 and runner.denoiser.bucketed_calls == REQUEST.steps
        assert runner.denoiser.latent_shapes == [(32, 16 * 4)]  # 8 x 4 tokens of 2x2 packed latents
    assert float(np.abs(result.pixels - plain_pixels["tiny-flux"]).max()) <= 1e-4
