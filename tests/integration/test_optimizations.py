"""Optimizations applied to real (tiny) models: what changes, what must not, and what is reported."""

from __future__ import annotations

import numpy as np
import pytest

from baton import Engine, GenerationRequest
from baton.config import CompileConfig, OptimizationConfig, PromptCacheConfig
from baton.optim import preset_config
from tests.conftest import assert_matches_reference

REQUEST = GenerationRequest(prompt="a red fox in the snow", steps=3, seed=11, width=64, height=64, num_images=2,
                            output_format="np")


def generate(options: OptimizationConfig, model: str = "tiny-sd15", request: GenerationRequest = REQUEST, **fields):
    with Engine(models=model, device="cpu", optimizations=options, **fields) as engine:
        result = engine.generate(request, model=model)
        return result, engine.describe()["models"][0]


@pytest.fixture(scope="module")
def plain_pixels():
    return {model: generate(OptimizationConfig(), model)[0].pixels for model in ("tiny-sd15", "tiny-sdxl")}


@pytest.mark.parametrize("model", ["tiny-sd15", "tiny-sdxl"])
@pytest.mark.parametrize(
    ("options", "tolerance", "reported"),
    [
        (OptimizationConfig(attention="classic"), 1e-5, "attention: classic"),
        (OptimizationConfig(attention="math"), 1e-5, "math backend only"),
        (OptimizationConfig(attention="flash"), 1e-5, "flash backend only"),
        (OptimizationConfig(fuse_qkv=True), 1e-5, "fused QKV"),
        (OptimizationConfig(channels_last=True), 1e-5, "channels_last"),
        (OptimizationConfig(vae_slicing=True), 1e-5, "vae slicing"),
        (OptimizationConfig(vae_tiling=True), 1e-5, "vae tiling"),  # 64x64 is below the tile size: no seams
        (OptimizationConfig(prompt_cache=PromptCacheConfig(max_bytes=2**20)), 0.0, "prompt cache"),
        (OptimizationConfig(text_encoder_dtype="bfloat16"), 0.05, "text encoders in bfloat16"),
        (OptimizationConfig(vae_dtype="bfloat16"), 0.05, "vae in bfloat16"),
    ],
)
def test_each_option_is_applied_and_reported(plain_pixels, model, options, tolerance, reported):
    result, described = generate(options, model)
    assert any(reported in line for line in described["optimizations"]), described["optimizations"]
    difference = float(np.abs(result.pixels - plain_pixels[model]).max())
    assert difference <= tolerance, difference
    if tolerance >= 0.05:
        assert difference > 0  # a lower precision really ran


def test_lossless_options_still_match_diffusers():
    options = OptimizationConfig(attention="classic", vae_slicing=True, prompt_cache=PromptCacheConfig(max_bytes=2**20))
    with Engine(models="tiny-sdxl", device="cpu", optimizations=options) as engine:
        result = engine.generate(REQUEST)
        assert_matches_reference(engine, result, REQUEST)  # the reference pipeline shares the optimized modules


def test_the_prompt_cache_counts_hits_and_precomputes():
    options = OptimizationConfig(prompt_cache=PromptCacheConfig(max_bytes=2**20, precompute=(REQUEST.prompt,)))
    with Engine(models="tiny-sd15", device="cpu", optimizations=options) as engine:
        stats = engine.runners["tiny-sd15"].prompt_cache.stats()
        assert stats["entries"] == 1 and stats["misses"] == 1  # the precomputed prompt
        first = engine.generate(REQUEST)
        engine.generate(REQUEST, prompt="another prompt")
        again = engine.generate(REQUEST, guidance_scale=1.0)  # unguided: served by the guided entry
        stats = engine.describe()["models"][0]["prompt_cache"]
        assert (stats["hits"], stats["misses"], stats["entries"]) == (2, 2, 2)
        assert first.pixels.shape == again.pixels.shape


@pytest.mark.parametrize("model", ["tiny-sd15", "tiny-sdxl"])
def test_the_tiny_autoencoder_decodes_in_both_modes(model):
    options = OptimizationConfig(vae="tiny")
    staged, described = generate(options, model)
    expected = "taesdxl" if model == "tiny-sdxl" else "taesd"
    assert any(f"vae replaced by {expected} (AutoencoderTiny" in line for line in described["optimizations"])
    assert staged.pixels.shape == (2, 64, 64, 3) and staged.pixels.min() >= 0 and staged.pixels.max() <= 1
    stacked, _ = generate(options, model, mode="stacked")  # the baseline decodes with it too
    assert float(np.abs(staged.pixels - stacked.pixels).max()) <= 1e-5


def test_a_vae_that_upsamples_by_another_factor_is_refused(tmp_path):
    from diffusers import AutoencoderTiny

    AutoencoderTiny(encoder_block_out_channels=(8, 8, 8), decoder_block_out_channels=(8, 8, 8),
                    num_encoder_blocks=(1, 1, 1), num_decoder_blocks=(1, 1, 1)).save_pretrained(tmp_path / "x4")
    with pytest.raises(ValueError, match=r"`vae` '.*x4' upsamples latents 4x and the model's own VAE 8x"):
        Engine(models="tiny-sd15", device="cpu", optimizations=OptimizationConfig(vae=str(tmp_path / "x4")))


def test_tiny_means_the_models_own_trained_tiny_autoencoder(caplog):
    """``shapes`` ships one (4x, not the published 8x): it is what ``tiny`` loads, with no warning, and it draws
    the scene (read by the detector: colour and count, which it kept on every held-out prompt in the bench)."""
    from baton.shapes.detector import read_scene, score
    from baton.shapes.scenes import Scene, caption

    scene = Scene("red", "circle", "large", 1, "center")
    request = GenerationRequest(prompt=caption(scene), steps=30, seed=0, output_format="np")
    with caplog.at_level("WARNING", logger="baton.optim.apply"):
        result, described = generate(OptimizationConfig(vae="tiny"), "shapes", request)
    assert any(line.startswith("vae replaced by ") and line.endswith("vae_tiny (AutoencoderTiny, float32)")
               for line in described["optimizations"])
    assert result.pixels.shape == (1, 64, 64, 3) and "random weights" not in caplog.text
    check = score(scene, read_scene(result.pixels[0]))
    assert check["colour"] and check["count"], (caption(scene), check)


def test_a_4x_tiny_autoencoder_tiles_as_it_decodes_whole():
    """diffusers sizes a tiny autoencoder's tiles for 8x; baton sets them by the real factor (shapes' is 4x)."""
    request = GenerationRequest(prompt="two small red circles at the top left on a black background", steps=4,
                                seed=5, output_format="np")
    whole, _ = generate(OptimizationConfig(vae="tiny"), "shapes", request)
    tiled, described = generate(OptimizationConfig(vae="tiny", vae_tiling=True), "shapes", request)
    assert any("tiling" in line for line in described["optimizations"])
    assert tiled.pixels.shape == (1, 64, 64, 3) and np.abs(tiled.pixels - whole.pixels).max() <= 1e-5


def test_random_tiny_weights_on_a_trained_model_are_warned_about(tmp_path, caplog):
    import shutil

    from baton.models.registry import EMBEDDED_MODELS

    folder = tmp_path / "shapes"
    shutil.copytree(EMBEDDED_MODELS["shapes"], folder, ignore=shutil.ignore_patterns("vae_tiny"))
    with caplog.at_level("WARNING", logger="baton.optim.apply"):
        result, described = generate(OptimizationConfig(vae="taesd"), str(folder))
    assert "vae replaced by taesd (AutoencoderTiny, float32, random weights)" in described["optimizations"]
    assert "has random weights" in caplog.text and result.pixels.shape == (2, 64, 64, 3)


def test_an_unreadable_vae_is_refused_at_start(tmp_path):
    with pytest.raises(ValueError, match="`vae` '.*' is not a built-in VAE"):
        Engine(models="tiny-sd15", device="cpu", optimizations=OptimizationConfig(vae=str(tmp_path / "missing")))


def test_cpu_presets_run():
    for preset in ("baseline", "low-memory"):
        with Engine(preset_config(preset, "cpu"), device="cpu") as engine:
            assert engine.describe()["preset"] == preset
            assert engine.generate(REQUEST).pixels.shape == (2, 64, 64, 3)


def test_compiled_buckets_match_eager_and_never_recompile_after_warm_up(tmp_path, plain_pixels):
    from torch._dynamo.utils import counters

    options = OptimizationConfig(
        compile=CompileConfig(enabled=True, batch_buckets=(2, 4), sizes=((64, 64),), cache_dir=str(tmp_path),
                              vae=True),
        vae_slicing=True,  # the decoder then only ever sees one image: one compiled shape
    )
    with Engine(models="tiny-sd15", device="cpu", optimizations=options) as engine:
        runner = engine.runners["tiny-sd15"]
        assert runner.optimized.warmup_s is not None and not runner.batch_invariant
        graphs_after_warm_up = counters["stats"]["unique_graphs"]
        requests = [
            REQUEST,  # 4 rows: a bucket
            GenerationRequest(prompt="one", steps=3, seed=1, width=64, height=64, output_format="np"),  # 2 rows
            GenerationRequest(prompt="odd", steps=3, seed=2, width=64, height=64, guidance_scale=1.0,
                              num_images=3, output_format="np"),  # 3 rows: padded to 4
        ]
        results = [engine.generate(request) for request in requests]
        assert counters["stats"]["unique_graphs"] == graphs_after_warm_up  # no compile while serving
        forwards = 4  # per request: PNDM's 3 steps take 4 forwards
        assert runner.denoiser.eager_calls == 0 and runner.denoiser.bucketed_calls == 3 * forwards
        assert runner.vae.decoder.eager_calls == 0 and len(runner.vae.decoder.warmed) == 1
        engine.generate(REQUEST, width=128, height=128)  # a size that was not compiled runs eagerly
        assert runner.denoiser.eager_calls == forwards
        assert counters["stats"]["unique_graphs"] == graphs_after_warm_up
        assert float(np.abs(results[0].pixels - plain_pixels["tiny-sd15"]).max()) <= 1e-4
        lines = engine.describe()["models"][0]["optimizations"]
        assert any("torch.compile of the denoiser" in line for line in lines)
        assert any(line.startswith("warm-up: 2 shapes") for line in lines)
    assert any(tmp_path.iterdir())  # the persistent cache was written where asked


def test_a_cuda_only_option_fails_before_loading_anything():
    with pytest.raises(ValueError, match="`cuda_graphs` needs a CUDA device"):
        Engine(models="no-such-model", device="cpu", optimizations=OptimizationConfig(cuda_graphs=True))


def test_labelled_stages_show_in_a_profile(tmp_path):
    from baton.optim.profiling import profiled

    with Engine(models="tiny-sd15", device="cpu") as engine, profiled(tmp_path, engine.device) as profile:
        engine.generate(REQUEST)
    summary = profile["summary"]
    assert {"text_encode", "denoise", "vae_decode", "image_encode"} <= set(summary)
    assert summary["denoise"]["ranges"] == 4  # PNDM: 3 steps take 4 forwards
    assert summary["denoise"]["top"][0]["name"].startswith("aten::")
    trace = (tmp_path / "trace.json").read_text()
    assert '"baton/denoise"' in trace and (tmp_path / "summary.md").exists()


def test_describe_reports_the_options():
    options = OptimizationConfig(vae_slicing=True)
    with Engine(models="tiny-sd15", device="cpu", optimizations=options) as engine:
        described = engine.describe()
    assert described["optimizations"]["vae_slicing"] is True and described["preset"] is None


def test_a_vae_loads_from_a_folder(tmp_path):
    from diffusers import AutoencoderTiny

    AutoencoderTiny(encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8)).save_pretrained(
        tmp_path / "tiny-vae"
    )
    result, described = generate(OptimizationConfig(vae=str(tmp_path / "tiny-vae")))
    assert any(f"vae replaced by {tmp_path / 'tiny-vae'} (AutoencoderTiny" in line
               for line in described["optimizations"])
    assert result.pixels.shape == (2, 64, 64, 3)
