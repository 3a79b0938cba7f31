"""Built-in architectures with random weights, built from config dicts with no files and no network.

``tiny-*`` models are for tests (a few hundred thousand to a few million parameters, well under a second per
image on a CPU). ``*-random`` models have the published shapes of Stable Diffusion 1.5 and SDXL base 1.0: their
compute, memory and timings equal the real checkpoints', so benchmarks on them are honest even though the images
they draw are noise.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    DiffusionPipeline,
    EulerDiscreteScheduler,
    LCMScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from baton.models.tokenizers import BOS_TOKEN, EOS_TOKEN, byte_level_clip_tokenizer, byte_level_vocab


@contextlib.contextmanager
def muted(logger_name: str) -> Iterator[None]:
    """Only errors from ``logger_name`` while inside (for warnings about what baton does on purpose)."""
    muted_logger = logging.getLogger(logger_name)
    level = muted_logger.level
    muted_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        muted_logger.setLevel(level)


def quiet_casts() -> contextlib.AbstractContextManager[None]:
    """diffusers warns on every ``module.to(dtype)`` that some modules "should be kept in float32", even when
    it lists none; a deliberate cast of a whole model is not news."""
    return muted("diffusers.models.modeling_utils")


# Schedulers as the published model folders configure them. Every value is spelled out: diffusers treats an
# unset value as "use the default of whatever scheduler class this config is converted to", and a config that
# went through save_pretrained has them all set, so explicit values keep a built-in model and its saved copy
# sampling alike.
SD15_SCHEDULER = dict(
    beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
    skip_prk_steps=True, steps_offset=1, set_alpha_to_one=False, timestep_spacing="leading",
    prediction_type="epsilon",
)
SDXL_SCHEDULER = dict(
    beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
    steps_offset=1, timestep_spacing="leading", interpolation_type="linear", prediction_type="epsilon",
)
# As the LCM-distilled checkpoints configure it (SimianLuo/LCM_Dreamshaper_v7, latent-consistency/lcm-sdxl)
LCM_SCHEDULER = dict(
    beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
    original_inference_steps=50, set_alpha_to_one=True, steps_offset=1, timestep_spacing="leading",
    timestep_scaling=10.0, clip_sample=False, prediction_type="epsilon",
)


def _clip_text(
    hidden: int, layers: int, heads: int, intermediate: int, act: str, projection: int, vocab_size: int = 49408
) -> dict:
    vocab = byte_level_vocab()
    return dict(
        vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=intermediate, hidden_act=act, projection_dim=projection, max_position_embeddings=77,
        bos_token_id=vocab[BOS_TOKEN], eos_token_id=vocab[EOS_TOKEN], pad_token_id=vocab[EOS_TOKEN],
    )


def _vae(channels: tuple[int, ...], layers: int, groups: int, sample_size: int, **extra: Any) -> dict:
    return dict(
        block_out_channels=channels, down_block_types=("DownEncoderBlock2D",) * len(channels),
        up_block_types=("UpDecoderBlock2D",) * len(channels), latent_channels=4, layers_per_block=layers,
        norm_num_groups=groups, sample_size=sample_size, **extra,
    )


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """New floating-point tensors in ``dtype`` while inside. The default dtype is process-wide: a thread that
    makes tensors meanwhile gets it too, which is why only full-size builds (at load time) use this."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


class RandomWeights:
    """Building and counting a random-weight pipeline from its spec's ``_modules()`` and ``_assemble()``."""

    full_size: bool = False
    """Initialise directly in the target dtype as well as on the device (``baton.models.builtin_dit``: a float32
    copy of a 17B-parameter model would need 68 GB); else float32 then cast, so weights are the same in any dtype."""

    def build(self, device: torch.device | str, dtype: torch.dtype, seed: int = 0) -> DiffusionPipeline:
        """Build the pipeline with seeded random weights directly on ``device``, in ``dtype``."""
        device = torch.device(device)
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.device(device):
            torch.manual_seed(seed)
            with default_dtype(dtype) if self.full_size else contextlib.nullcontext():
                modules = self._modules()
        for module in modules.values():
            # full size: only what a constructor makes in float32 on purpose remains (SD3's position table)
            with quiet_casts():
                module.to(dtype=dtype)
            module.eval().requires_grad_(False)
        return self._assemble(modules)

    def parameter_counts(self) -> dict[str, int]:
        """Parameters per component, counted on the meta device (no memory; seconds even with T5-XXL)."""
        with torch.device("meta"):
            modules = self._modules()
        return {name: sum(p.numel() for p in module.parameters()) for name, module in modules.items()}

    def _modules(self) -> dict[str, torch.nn.Module]:
        raise NotImplementedError

    def _assemble(self, modules: dict[str, torch.nn.Module]) -> DiffusionPipeline:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class BuiltinSpec(RandomWeights):
    """A random-weight pipeline described by the config dicts of its components."""

    name: str
    family: str
    description: str
    unet: dict
    vae: dict
    text_encoder: dict
    text_encoder_2: dict | None = None  # SDXL's second (OpenCLIP bigG-shaped) encoder, with projection
    scheduler: dict | None = None
    """An ``LCMScheduler`` config for a guidance-distilled model; ``None``: the family's published scheduler."""

    def _modules(self) -> dict[str, torch.nn.Module]:
        modules: dict[str, torch.nn.Module] = {
            "unet": UNet2DConditionModel(**self.unet),
            "vae": AutoencoderKL(**self.vae),
            "text_encoder": CLIPTextModel(CLIPTextConfig(**self.text_encoder)),
        }
        if self.text_encoder_2 is not None:
            modules["text_encoder_2"] = CLIPTextModelWithProjection(CLIPTextConfig(**self.text_encoder_2))
        return modules

    def _assemble(self, modules: dict[str, torch.nn.Module]) -> DiffusionPipeline:
        if self.family == "sd15":
            scheduler = PNDMScheduler(**SD15_SCHEDULER) if self.scheduler is None else LCMScheduler(**self.scheduler)
            pipe = StableDiffusionPipeline(
                **modules, tokenizer=byte_level_clip_tokenizer(), scheduler=scheduler,
                safety_checker=None, feature_extractor=None, requires_safety_checker=False,
            )
        else:
            scheduler = (EulerDiscreteScheduler(**SDXL_SCHEDULER) if self.scheduler is None
                         else LCMScheduler(**self.scheduler))
            pipe = StableDiffusionXLPipeline(
                **modules, tokenizer=byte_level_clip_tokenizer(), tokenizer_2=byte_level_clip_tokenizer("!"),
                scheduler=scheduler, force_zeros_for_empty_prompt=True, add_watermarker=False,
            )
        pipe.set_progress_bar_config(disable=True)
        return pipe


_BYTE_VOCAB = len(byte_level_vocab())  # tiny encoders need no rows beyond the byte-level tokens
_TINY_UNET = dict(
    block_out_channels=(32, 64), layers_per_block=1, sample_size=32, norm_num_groups=32,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    attention_head_dim=(2, 4),
)
# Four VAE levels, like the real one, so the latent is 1/8 of the image and sizes mean the same as for SD.
_TINY_VAE = _vae((16, 32, 32, 32), layers=1, groups=16, sample_size=256)

SPECS: dict[str, BuiltinSpec] = {
    spec.name: spec
    for spec in (
        BuiltinSpec(
            name="tiny-sd15",
            family="sd15",
            description="tiny random SD1.5-style pipeline for tests (byte-level CLIP tokenizer)",
            unet={**_TINY_UNET, "cross_attention_dim": 32},
            vae=_TINY_VAE,
            text_encoder=_clip_text(32, 2, 4, 64, "quick_gelu", 32, vocab_size=_BYTE_VOCAB),
        ),
        BuiltinSpec(
            name="tiny-sdxl",
            family="sdxl",
            description="tiny random SDXL-style pipeline for tests (two text encoders, text_time conditioning)",
            unet={
                **_TINY_UNET, "cross_attention_dim": 64, "use_linear_projection": True,
                "transformer_layers_per_block": (1, 2), "addition_embed_type": "text_time",
                "addition_time_embed_dim": 8, "projection_class_embeddings_input_dim": 6 * 8 + 32,
            },
            vae={**_TINY_VAE, "scaling_factor": 0.13025},
            text_encoder=_clip_text(32, 2, 4, 64, "quick_gelu", 32, vocab_size=_BYTE_VOCAB),
            text_encoder_2=_clip_text(32, 2, 4, 64, "gelu", 32, vocab_size=_BYTE_VOCAB),
        ),
        BuiltinSpec(
            name="sd15-random",
            family="sd15",
            description="Stable Diffusion 1.5 shapes (860M UNet, CLIP ViT-L/14 text), random weights",
            unet=dict(
                block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, sample_size=64,
                cross_attention_dim=768, attention_head_dim=8,
                down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            ),
            vae=_vae((128, 256, 512, 512), layers=2, groups=32, sample_size=512),
            text_encoder=_clip_text(768, 12, 12, 3072, "quick_gelu", 768),
        ),
        BuiltinSpec(
            name="sdxl-random",
            family="sdxl",
            description="SDXL base 1.0 shapes (2.6B UNet, CLIP-L + OpenCLIP bigG text), random weights",
            unet=dict(
                block_out_channels=(320, 640, 1280), layers_per_block=2, sample_size=128,
                cross_attention_dim=2048, attention_head_dim=(5, 10, 20), use_linear_projection=True,
                transformer_layers_per_block=(1, 2, 10), addition_embed_type="text_time",
                addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816,
                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            ),
            vae=_vae((128, 256, 512, 512), layers=2, groups=32, sample_size=1024, scaling_factor=0.13025,
                     force_upcast=True),
            text_encoder=_clip_text(768, 12, 12, 3072, "quick_gelu", 768),
            text_encoder_2=_clip_text(1280, 32, 20, 5120, "gelu", 1280),
        ),
    )
}


def _guidance_distilled(spec: BuiltinSpec, name: str) -> BuiltinSpec:
    """``spec`` as an LCM-distilled checkpoint of it is: a UNet that embeds the guidance scale (its
    ``time_cond_proj_dim``, 256 in the published ones), and the LCM sampler."""
    return dataclasses.replace(
        spec, name=name, unet={**spec.unet, "time_cond_proj_dim": 32}, scheduler=LCM_SCHEDULER,
        description=f"{spec.description}, guidance-distilled as LCM models are (timestep_cond, LCM sampler)",
    )


for _name, _base in (("tiny-lcm", "tiny-sd15"), ("tiny-sdxl-lcm", "tiny-sdxl")):
    SPECS[_name] = _guidance_distilled(SPECS[_base], _name)


# Last, because builtin_dit imports helpers from this module: SD3 and Flux built-ins join the same registry.
from baton.models.builtin_dit import DIT_SPECS  # noqa: E402

SPECS.update(DIT_SPECS)  # type: ignore[arg-type]  # DiTSpec has BuiltinSpec's interface, not its fields
