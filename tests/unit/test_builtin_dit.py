"""Built-in SD3 and Flux pipelines: published shapes, working tiny models, saved copies that sample alike."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from diffusers import FluxPipeline, PixArtSigmaPipeline, StableDiffusion3Pipeline
from transformers import T5Tokenizer

from baton.models.builtin import SPECS
from baton.models.builtin_dit import DIT_SPECS, DiTSpec
from baton.models.tokenizers import character_t5_tokenizer

TINY = ("tiny-sd3", "tiny-flux", "tiny-flux-schnell", "tiny-pixart")
PIPELINES = {"sd3": StableDiffusion3Pipeline, "flux": FluxPipeline, "pixart": PixArtSigmaPipeline}

# Published component sizes. CLIP-L, bigG, T5-XXL encoder, SD3 transformer: the per-component table NVIDIA's
# aitune documentation prints for stabilityai/stable-diffusion-3-medium-diffusers (SD3's CLIPs carry projections;
# Flux's CLIP-L is the SD1.5 text encoder without one). FLUX.1 transformers: the parameter totals of the
# black-forest-labs safetensors (dev: 23,802,816,640 bf16 bytes / 2). The 16-channel VAE is the same
# architecture in SD3 and Flux: 83,819,683 values in FLUX.1-dev's ae.safetensors.
CLIP_L, CLIP_L_PROJECTED, CLIP_BIG_G_PROJECTED = 123_060_480, 123_650_304, 694_659_840
T5_XXL_ENCODER = 4_762_310_656
FLOW_VAE = 83_819_683
PUBLISHED = {
    "sd3-medium-random": {"transformer": 2_028_328_000, "vae": FLOW_VAE, "text_encoder": CLIP_L_PROJECTED,
                          "text_encoder_2": CLIP_BIG_G_PROJECTED, "text_encoder_3": T5_XXL_ENCODER},
    "flux-dev-random": {"transformer": 11_901_408_320, "vae": FLOW_VAE, "text_encoder": CLIP_L,
                        "text_encoder_2": T5_XXL_ENCODER},
    "flux-schnell-random": {"transformer": 11_891_178_560, "vae": FLOW_VAE, "text_encoder": CLIP_L,
                            "text_encoder_2": T5_XXL_ENCODER},
}


@pytest.fixture(scope="module")
def pipelines() -> dict[str, object]:
    return {name: DIT_SPECS[name].build(torch.device("cpu"), torch.float32) for name in TINY}


def generate(pipe, height: int, width: int, prompt: str = "a red circle") -> torch.Tensor:
    # PixArt's pipeline snaps sizes to its aspect-ratio bins unless told not to (the tiny one has no bins)
    binning = {"use_resolution_binning": False} if isinstance(pipe, PixArtSigmaPipeline) else {}
    return pipe(prompt, num_inference_steps=2, height=height, width=width,
                generator=torch.Generator("cpu").manual_seed(0), output_type="pt", **binning).images


def test_the_dit_models_join_the_builtin_registry():
    families = {name: SPECS[name].family for name in DIT_SPECS}
    assert families == {"tiny-sd3": "sd3", "tiny-flux": "flux", "tiny-flux-schnell": "flux", "tiny-pixart": "pixart",
                        "sd3-medium-random": "sd3", "flux-dev-random": "flux", "flux-schnell-random": "flux"}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_full_size_models_have_the_published_parameter_counts(name):
    assert DIT_SPECS[name].parameter_counts() == PUBLISHED[name]


def test_schnell_is_dev_without_the_guidance_embedder():
    dev, schnell = (DIT_SPECS[name].parameter_counts()["transformer"] for name in ("flux-dev-random",
                                                                                    "flux-schnell-random"))
    assert dev - schnell == (256 * 3072 + 3072) + (3072 * 3072 + 3072)  # two linears: 256 → 3072 → 3072


@pytest.mark.parametrize("name", TINY)
def test_tiny_models_stay_tiny(name):
    assert sum(DIT_SPECS[name].parameter_counts().values()) < 1_000_000


@pytest.mark.parametrize("name", TINY)
def test_tiny_models_draw_images_of_the_asked_size(pipelines, name):
    pipe = pipelines[name]
    assert isinstance(pipe, PIPELINES[DIT_SPECS[name].family])
    # Flux packs 2x2 latents, so its sides are multiples of 16; not square, so height and width can't swap
    height, width = (128, 64) if DIT_SPECS[name].family == "flux" else (DIT_SPECS[name].native_size,) * 2
    images = generate(pipe, height, width)
    assert images.shape == (1, 3, height, width)
    assert torch.isfinite(images).all() and images.min() >= 0 and images.max() <= 1
    assert images.std() > 0.01  # noise, but not a flat (fully clamped) image


def test_sd3_native_size_is_what_its_pipeline_defaults_to(pipelines):
    pipe = pipelines["tiny-sd3"]
    assert pipe.default_sample_size * pipe.vae_scale_factor == DIT_SPECS["tiny-sd3"].native_size


@pytest.mark.parametrize("name", ["tiny-sd3", "tiny-flux"])
def test_a_saved_copy_loads_offline_and_draws_the_same_images(pipelines, tmp_path, name):
    pipe = pipelines[name]
    pipe.save_pretrained(tmp_path)
    loaded = PIPELINES[DIT_SPECS[name].family].from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert dict(loaded.scheduler.config) == dict(pipe.scheduler.config)
    assert loaded.vae.config.shift_factor == pipe.vae.config.shift_factor
    t5 = "tokenizer_3" if name == "tiny-sd3" else "tokenizer_2"
    prompt = "A red circle, on a blue square; ünïcode " + "and more " * 80
    for tokenizer in (t5, "tokenizer"):
        before, after = getattr(pipe, tokenizer), getattr(loaded, tokenizer)
        kwargs = dict(padding="max_length", max_length=77, truncation=True)
        assert after(prompt, **kwargs).input_ids == before(prompt, **kwargs).input_ids
    expected, actual = generate(pipe, 64, 64), generate(loaded, 64, 64)
    # loaded tensors are not 64-byte aligned, so CPU GEMMs may sum in another order: ~1e-6, not bitwise
    assert float((actual - expected).abs().max()) <= 1e-5


@pytest.mark.parametrize("name", TINY)
def test_tiny_builds_are_seeded(name):
    spec = DIT_SPECS[name]
    first, second = (spec.build(torch.device("cpu"), torch.float32) for _ in range(2))
    other = spec.build(torch.device("cpu"), torch.float32, seed=1)
    for component in ("transformer", "vae", "text_encoder", "text_encoder_2"):
        if getattr(first, component, None) is None:  # PixArt has one text encoder
            continue
        a, b, c = (getattr(pipe, component).state_dict() for pipe in (first, second, other))
        assert all(torch.equal(a[key], b[key]) for key in a)
        assert not all(torch.equal(a[key], c[key]) for key in a)


def test_a_tiny_model_in_half_precision_is_the_float32_model_cast():
    single = DIT_SPECS["tiny-flux"].build(torch.device("cpu"), torch.float32).transformer.state_dict()
    half = DIT_SPECS["tiny-flux"].build(torch.device("cpu"), torch.bfloat16).transformer.state_dict()
    assert all(torch.equal(half[key], single[key].to(torch.bfloat16)) for key in single)


def test_full_size_builds_make_each_weight_in_the_target_dtype(monkeypatch):
    """17B parameters made in float32 and then cast would need 68 GB on the host first; record what the
    constructors make, before the cast."""
    made: list[torch.dtype] = []
    modules = DiTSpec._modules

    def recording(spec):
        built = modules(spec)
        made.extend(p.dtype for module in built.values() for p in module.parameters())
        return built

    monkeypatch.setattr(DiTSpec, "_modules", recording)
    pipe = DIT_SPECS["flux-dev-random"].build(torch.device("meta"), torch.bfloat16)
    assert len(made) > 1000 and set(made) == {torch.bfloat16}
    assert pipe.transformer.x_embedder.weight.device.type == "meta"
    assert torch.get_default_dtype() == torch.float32  # restored
    # on a real device too (a tiny model marked full size, so it is quick)
    made.clear()
    spec = dataclasses.replace(DIT_SPECS["tiny-sd3"], full_size=True)
    first, second = (spec.build(torch.device("cpu"), torch.float16) for _ in range(2))
    assert set(made) == {torch.float16}
    assert {p.dtype for p in first.transformer.parameters()} == {torch.float16}
    assert all(torch.equal(p, q) for p, q in zip(first.text_encoder_3.parameters(), second.text_encoder_3.parameters()))


def test_the_t5_tokenizer_pads_ends_and_truncates():
    tokenizer = character_t5_tokenizer()
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2)
    ids = tokenizer("a red circle", padding="max_length", max_length=16, truncation=True).input_ids
    assert len(ids) == 16 and ids[ids.index(1) + 1:] == [0] * (15 - ids.index(1))
    assert tokenizer.convert_ids_to_tokens(ids[:3]) == ["\u2581a", "\u2581r", "e"]
    long = tokenizer("word " * 1000, padding="max_length", max_length=256, truncation=True).input_ids
    assert len(long) == 256 and long[-1] == 1
    assert isinstance(tokenizer, T5Tokenizer) and max(tokenizer.get_vocab().values()) < 32128
