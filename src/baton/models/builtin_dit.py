"""Built-in diffusion-transformer pipelines (Stable Diffusion 3, Flux, PixArt-Σ) with random weights, from config
dicts.

Like :mod:`baton.models.builtin`: ``tiny-*`` models exercise the SD3 and Flux code paths in tests on a CPU, and
``*-random`` models have the published shapes of SD3 medium and FLUX.1 dev / schnell, so their compute, memory and
timings are the real checkpoints' without downloading tens of gigabytes.

Full-size models are built differently from tiny ones: FLUX.1-dev with its T5-XXL encoder is about 17 billion
parameters, so each weight is created on the target device in the target dtype (a float32 copy on the host would
need 68 GB and minutes of initialisation). Tiny models are built in float32 and then cast, as the UNet built-ins
are, so their weights are the same whatever dtype is asked for.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import (
    AutoencoderKL,
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    PixArtSigmaPipeline,
    PixArtTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, T5Config, T5EncoderModel

from baton.models.builtin import _TINY_VAE, RandomWeights, _clip_text
from baton.models.tokenizers import (
    byte_level_clip_tokenizer,
    byte_level_vocab,
    character_t5_tokenizer,
    character_t5_vocab,
)

# FlowMatchEulerDiscreteScheduler as the published model folders configure it. The folders set only a few
# values; the rest are this diffusers version's defaults, spelled out so a saved copy (which has them all) and
# the built-in model sample alike even if a later diffusers changes a default.
_FLOW_MATCH_DEFAULTS = dict(
    num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=False, base_shift=0.5, max_shift=1.15,
    base_image_seq_len=256, max_image_seq_len=4096, invert_sigmas=False, shift_terminal=None,
    use_karras_sigmas=False, use_exponential_sigmas=False, use_beta_sigmas=False, time_shift_type="exponential",
    stochastic_sampling=False,
)
SD3_SCHEDULER = {**_FLOW_MATCH_DEFAULTS, "shift": 3.0}  # stabilityai/stable-diffusion-3-medium-diffusers
# black-forest-labs/FLUX.1-dev: the shift grows with the image's token count (mu from 0.5 at 256 to 1.15 at 4096)
FLUX_DEV_SCHEDULER = {**_FLOW_MATCH_DEFAULTS, "shift": 3.0, "use_dynamic_shifting": True}
FLUX_SCHNELL_SCHEDULER = {**_FLOW_MATCH_DEFAULTS, "shift": 1.0}  # black-forest-labs/FLUX.1-schnell: unshifted
# PixArt-alpha/PixArt-Sigma-XL-2-1024-MS: DPM-Solver++ (2M) over a linear beta schedule, epsilon prediction
PIXART_SIGMA_SCHEDULER = dict(
    num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear", prediction_type="epsilon",
    algorithm_type="dpmsolver++", solver_order=2, solver_type="midpoint", lower_order_final=True,
    use_karras_sigmas=False, timestep_spacing="linspace", steps_offset=0, thresholding=False, variance_type=None,
)

# Which text encoder class each position holds. SD3 takes the penultimate hidden states and the projected
# pooled output of both CLIPs; Flux takes only CLIP-L's unprojected pooled output.
_TEXT_ENCODERS: dict[str, tuple[tuple[str, type[torch.nn.Module]], ...]] = {
    "sd3": (("text_encoder", CLIPTextModelWithProjection), ("text_encoder_2", CLIPTextModelWithProjection),
            ("text_encoder_3", T5EncoderModel)),
    "flux": (("text_encoder", CLIPTextModel), ("text_encoder_2", T5EncoderModel)),
    "pixart": (("text_encoder", T5EncoderModel),),
}
_TRANSFORMERS: dict[str, type[torch.nn.Module]] = {
    "sd3": SD3Transformer2DModel, "flux": FluxTransformer2DModel, "pixart": PixArtTransformer2DModel,
}


def _t5_encoder(d_model: int, d_ff: int, d_kv: int, heads: int, layers: int, vocab_size: int = 32128) -> dict:
    """A T5 v1.1 encoder config (gated GELU feed-forward, untied head), as SD3's and Flux's T5-XXL have."""
    return dict(
        vocab_size=vocab_size, d_model=d_model, d_ff=d_ff, d_kv=d_kv, num_heads=heads, num_layers=layers,
        feed_forward_proj="gated-gelu", relative_attention_num_buckets=32, relative_attention_max_distance=128,
        layer_norm_epsilon=1e-6, dropout_rate=0.1, tie_word_embeddings=False, is_encoder_decoder=False,
        use_cache=False, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )


def _flow_vae(channels: tuple[int, ...], layers: int, groups: int, sample_size: int, scaling: float,
              shift: float) -> dict:
    """SD3's and Flux's 16-channel VAE: a shift as well as a scale on the latents, and no quant convs."""
    return dict(
        block_out_channels=channels, down_block_types=("DownEncoderBlock2D",) * len(channels),
        up_block_types=("UpDecoderBlock2D",) * len(channels), latent_channels=16, layers_per_block=layers,
        norm_num_groups=groups, sample_size=sample_size, scaling_factor=scaling, shift_factor=shift,
        use_quant_conv=False, use_post_quant_conv=False, force_upcast=True,
    )


@dataclass(frozen=True, slots=True)
class DiTSpec(RandomWeights):
    """A random-weight SD3 or Flux pipeline described by the config dicts of its components."""

    name: str
    family: str  # "sd3", "flux" or "pixart"
    description: str
    transformer: dict
    vae: dict
    text_encoders: tuple[dict, ...]
    """Configs in the order of ``_TEXT_ENCODERS[family]``: CLIP configs, then the T5 config last."""
    scheduler: dict
    native_size: int
    """The side in pixels the model is meant for. SD3's pipeline derives its default from the transformer's
    ``sample_size``; Flux's hard-codes 1024, so for Flux this is also the VAE's ``sample_size``, which a saved
    copy keeps."""
    full_size: bool = False
    """Initialise directly on the device in the target dtype (see the module docstring)."""

    def _modules(self) -> dict[str, torch.nn.Module]:
        modules: dict[str, torch.nn.Module] = {
            "transformer": _TRANSFORMERS[self.family](**self.transformer),
            "vae": AutoencoderKL(**self.vae),
        }
        for (name, encoder_class), config in zip(_TEXT_ENCODERS[self.family], self.text_encoders, strict=True):
            config_class = T5Config if encoder_class is T5EncoderModel else CLIPTextConfig
            modules[name] = encoder_class(config_class(**config))
        return modules

    def _assemble(self, modules: dict[str, torch.nn.Module]) -> DiffusionPipeline:
        if self.family == "pixart":
            pipe = PixArtSigmaPipeline(**modules, scheduler=DPMSolverMultistepScheduler(**self.scheduler),
                                       tokenizer=character_t5_tokenizer())
            pipe.set_progress_bar_config(disable=True)
            return pipe
        scheduler = FlowMatchEulerDiscreteScheduler(**self.scheduler)
        if self.family == "sd3":
            # SD3's second tokenizer pads with "!" as SDXL's bigG tokenizer does
            pipe = StableDiffusion3Pipeline(
                **modules, scheduler=scheduler, tokenizer=byte_level_clip_tokenizer(),
                tokenizer_2=byte_level_clip_tokenizer("!"), tokenizer_3=character_t5_tokenizer(),
            )
        else:
            pipe = FluxPipeline(
                **modules, scheduler=scheduler, tokenizer=byte_level_clip_tokenizer(),
                tokenizer_2=character_t5_tokenizer(),
            )
        pipe.set_progress_bar_config(disable=True)
        return pipe


_BYTE_VOCAB = len(byte_level_vocab())
_CHAR_VOCAB = len(character_t5_vocab())  # tiny encoders need no rows beyond what the tokenizers emit
# Four VAE levels as in the real ones, so the latent is 1/8 of the image; 16 latent channels as in the real ones,
# so packing, shifting and scaling take the same paths.
_TINY_SD3_SIZE = 256
_TINY_FLUX_SIZE = 256


def _tiny_flux(name: str, guidance_embeds: bool, scheduler: dict, description: str) -> DiTSpec:
    return DiTSpec(
        name=name,
        family="flux",
        description=description,
        # in_channels: Flux packs each 2x2 patch of the 16-channel latent into one token
        transformer=dict(
            patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=16,
            num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, guidance_embeds=guidance_embeds,
            axes_dims_rope=(4, 6, 6),
        ),
        vae=_flow_vae((16, 32, 32, 32), layers=1, groups=16, sample_size=_TINY_FLUX_SIZE, scaling=0.3611,
                      shift=0.1159),
        text_encoders=(
            _clip_text(32, 2, 4, 64, "quick_gelu", 32, vocab_size=_BYTE_VOCAB),
            _t5_encoder(32, 64, 8, 4, 2, vocab_size=_CHAR_VOCAB),
        ),
        scheduler=scheduler,
        native_size=_TINY_FLUX_SIZE,
    )


# FLUX.1 dev and schnell differ only in the guidance embedder (dev is guidance-distilled) and the scheduler
_FLUX_TRANSFORMER = dict(
    patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128, num_attention_heads=24,
    joint_attention_dim=4096, pooled_projection_dim=768, axes_dims_rope=(16, 56, 56),
)
_CLIP_L = _clip_text(768, 12, 12, 3072, "quick_gelu", 768)
_CLIP_BIG_G = _clip_text(1280, 32, 20, 5120, "gelu", 1280)
_T5_XXL = _t5_encoder(4096, 10240, 64, 64, 24)
_FLUX_TEXT = "CLIP-L + T5-XXL text (byte/character-level tokenizers)"

DIT_SPECS: dict[str, DiTSpec] = {
    spec.name: spec
    for spec in (
        DiTSpec(
            name="tiny-sd3",
            family="sd3",
            description="tiny random SD3-style pipeline for tests (MMDiT, two CLIPs + T5, flow matching)",
            # caption_projection_dim is the transformer's width (heads x head dim), as in SD3; the two CLIPs'
            # hidden states side by side (32 + 32) are padded to the T5 width (joint_attention_dim), and their
            # projections side by side are the pooled input (32 + 32)
            transformer=dict(
                sample_size=_TINY_SD3_SIZE // 8, patch_size=2, in_channels=16, num_layers=2, attention_head_dim=8,
                num_attention_heads=4, joint_attention_dim=64, caption_projection_dim=32, pooled_projection_dim=64,
                out_channels=16, pos_embed_max_size=64,
            ),
            vae=_flow_vae((16, 32, 32, 32), layers=1, groups=16, sample_size=_TINY_SD3_SIZE, scaling=1.5305,
                          shift=0.0609),
            text_encoders=(
                _clip_text(32, 2, 4, 64, "quick_gelu", 32, vocab_size=_BYTE_VOCAB),
                _clip_text(32, 2, 4, 64, "gelu", 32, vocab_size=_BYTE_VOCAB),
                _t5_encoder(64, 128, 16, 4, 2, vocab_size=_CHAR_VOCAB),
            ),
            scheduler=SD3_SCHEDULER,
            native_size=_TINY_SD3_SIZE,
        ),
        DiTSpec(
            name="tiny-pixart",
            family="pixart",
            description="tiny random PixArt-Σ-style pipeline for tests (DiT with cross-attention to T5, AdaLN-single, "
                        "learned variance, DPM-Solver++)",
            # the transformer's width (2 heads x 8) is its cross-attention width; out_channels 8: noise and the
            # learned variance, 4 channels each
            transformer=dict(
                sample_size=16, patch_size=2, in_channels=4, out_channels=8, num_layers=2, num_attention_heads=2,
                attention_head_dim=8, cross_attention_dim=16, caption_channels=32, use_additional_conditions=False,
            ),
            vae={**_TINY_VAE, "scaling_factor": 0.13025},  # PixArt-Σ decodes with SDXL's VAE
            text_encoders=(_t5_encoder(32, 64, 8, 4, 2, vocab_size=_CHAR_VOCAB),),
            scheduler=PIXART_SIGMA_SCHEDULER,
            native_size=128,
        ),
        _tiny_flux("tiny-flux", True, FLUX_DEV_SCHEDULER,
                   "tiny random FLUX.1-dev-style pipeline for tests (guidance embedding, dynamic shift)"),
        _tiny_flux("tiny-flux-schnell", False, FLUX_SCHNELL_SCHEDULER,
                   "tiny random FLUX.1-schnell-style pipeline for tests (no guidance, unshifted schedule)"),
        DiTSpec(
            name="sd3-medium-random",
            family="sd3",
            description="Stable Diffusion 3 medium shapes (2.0B MMDiT, CLIP-L + OpenCLIP bigG + T5-XXL text), "
                        "random weights",
            transformer=dict(
                sample_size=128, patch_size=2, in_channels=16, num_layers=24, attention_head_dim=64,
                num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536,
                pooled_projection_dim=2048, out_channels=16, pos_embed_max_size=192,
            ),
            vae=_flow_vae((128, 256, 512, 512), layers=2, groups=32, sample_size=1024, scaling=1.5305, shift=0.0609),
            text_encoders=(_CLIP_L, _CLIP_BIG_G, _T5_XXL),
            scheduler=SD3_SCHEDULER,
            native_size=1024,
            full_size=True,
        ),
        DiTSpec(
            name="flux-dev-random",
            family="flux",
            description=f"FLUX.1-dev shapes (11.9B transformer with guidance embedding, {_FLUX_TEXT}), random weights",
            transformer={**_FLUX_TRANSFORMER, "guidance_embeds": True},
            vae=_flow_vae((128, 256, 512, 512), layers=2, groups=32, sample_size=1024, scaling=0.3611, shift=0.1159),
            text_encoders=(_CLIP_L, _T5_XXL),
            scheduler=FLUX_DEV_SCHEDULER,
            native_size=1024,
            full_size=True,
        ),
        DiTSpec(
            name="flux-schnell-random",
            family="flux",
            description=f"FLUX.1-schnell shapes (11.9B transformer, {_FLUX_TEXT}), random weights",
            transformer={**_FLUX_TRANSFORMER, "guidance_embeds": False},
            vae=_flow_vae((128, 256, 512, 512), layers=2, groups=32, sample_size=1024, scaling=0.3611, shift=0.1159),
            text_encoders=(_CLIP_L, _T5_XXL),
            scheduler=FLUX_SCHNELL_SCHEDULER,
            native_size=1024,
            full_size=True,
        ),
    )
}
