"""Replacement VAEs for decoding: the tiny autoencoder (built in with random weights, or loaded) or any VAE folder.

``taesd`` and ``taesdxl`` are the published architectures of madebyollin's tiny autoencoders (SD1.x and SDXL
latents); they share one architecture and differ only in weights, so both are ``AutoencoderTiny()``'s defaults.
``taesd3`` and ``taef1`` (SD3 and Flux latents) are the same design with 16 latent channels.
Built here with random weights, they decode noise, but their cost and memory equal the real ones'. For a model
whose VAE upsamples by another factor than 8, the built-in is the same design with one level more or fewer.

``tiny`` means the model's own trained tiny autoencoder when its folder has one (a ``vae_tiny`` subfolder, as
``baton train-shapes`` writes), and the random-weight built-in otherwise.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import torch
from diffusers import AutoencoderKL, AutoencoderTiny, ModelMixin

from baton.models.builtin import quiet_casts

logger = logging.getLogger(__name__)

BUILTIN_VAES: tuple[str, ...] = ("tiny", "taesd", "taesdxl", "taesd3", "taef1")
"""``tiny`` is the model's own tiny autoencoder if it ships one, else the one for the model's family
(``ModelRunner.tiny_vae``: ``taesdxl`` for SDXL, ``taesd3`` for SD3, ``taef1`` for Flux, ``taesd`` otherwise)."""
_LATENT_CHANNELS = {"taesd3": 16, "taef1": 16}
TINY_VAE_SUBFOLDER = "vae_tiny"
"""Where a model folder keeps its trained tiny autoencoder (not a diffusers convention: pipelines ignore it)."""


def resolve_vae_name(name: str, family_tiny_vae: str, model_source: str | None = None) -> str:
    if name != "tiny":
        return name
    if model_source is not None and (Path(model_source) / TINY_VAE_SUBFOLDER / "config.json").is_file():
        return str(Path(model_source) / TINY_VAE_SUBFOLDER)
    return family_tiny_vae


def tiny_vae_architecture(upsampling: int = 8, channels: int = 64) -> dict[str, tuple[int, ...]]:
    """``AutoencoderTiny`` arguments for a VAE that upsamples latents ``upsampling`` times (a power of 2): the
    published design (``upsampling`` 8, ``channels`` 64 are its defaults) with one level per doubling."""
    if upsampling < 2 or upsampling & (upsampling - 1):
        raise ValueError(f"a tiny autoencoder upsamples by a power of 2, got {upsampling}")
    levels = upsampling.bit_length()  # 8 -> 4 levels, 3 upsamplings
    return {"encoder_block_out_channels": (channels,) * levels, "decoder_block_out_channels": (channels,) * levels,
            "num_encoder_blocks": (1,) + (3,) * (levels - 1), "num_decoder_blocks": (3,) * (levels - 1) + (1,)}


def upsampling_factor(vae: ModelMixin) -> int:
    """How many pixels one latent becomes along each side when ``vae`` decodes."""
    config = vae.config
    if isinstance(vae, AutoencoderTiny):
        return config.upsampling_scaling_factor ** (len(config.decoder_block_out_channels) - 1)
    return 2 ** (len(config.block_out_channels) - 1)


def load_vae(name: str, device: torch.device, dtype: torch.dtype, upsampling: int = 8) -> ModelMixin:
    """``taesd`` / ``taesdxl`` (random weights, built for ``upsampling``), or a folder / hub id holding an
    AutoencoderTiny or AutoencoderKL."""
    if name in BUILTIN_VAES:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(0)
            vae = AutoencoderTiny(**tiny_vae_architecture(upsampling), latent_channels=_LATENT_CHANNELS.get(name, 4))
    else:
        vae = _load_pretrained(name)
    if isinstance(vae, AutoencoderTiny):
        # diffusers sizes an AutoencoderTiny's tiles as if it upsampled 8x (``2 ** out_channels``): with tiling
        # on, a 4x one blended 64-pixel tiles into 128-pixel slots and failed. Size them by the real factor.
        vae.spatial_scale_factor = upsampling_factor(vae)
        vae.tile_latent_min_size = vae.tile_sample_min_size // vae.spatial_scale_factor
    with quiet_casts():
        vae.to(device=device, dtype=dtype)
    return vae.eval().requires_grad_(False)


def _load_pretrained(name: str) -> ModelMixin:
    where = "local folder" if os.path.isdir(name) else "hub id"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            class_name = AutoencoderKL.load_config(name).get("_class_name")
    except Exception as exc:  # missing folder, unreachable hub: several exception types
        raise ValueError(
            f"`vae` {name!r} is not a built-in VAE ({', '.join(BUILTIN_VAES)}), and as a {where} it could not be "
            f"read: {exc}"
        ) from exc
    classes = {"AutoencoderTiny": AutoencoderTiny, "AutoencoderKL": AutoencoderKL}
    if class_name not in classes:
        raise ValueError(f"`vae` {name!r} is a {class_name}; supported: {sorted(classes)}")
    return classes[class_name].from_pretrained(name)


def check_vae_fits(vae: ModelMixin, latent_channels: int, upsampling: int, name: str) -> None:
    """A replacement must decode the model's latents to the size the request asked for."""
    channels = vae.config.latent_channels
    if channels != latent_channels:
        raise ValueError(
            f"`vae` {name!r} decodes {channels}-channel latents and the model makes {latent_channels}-channel ones"
        )
    if isinstance(vae, AutoencoderTiny) and vae.config.upsampling_scaling_factor != 2:
        # diffusers' stacked pipeline reads a VAE's factor as 2 per level, so only that layout decodes right there
        raise ValueError(f"`vae` {name!r} upsamples {vae.config.upsampling_scaling_factor}x per level; baton "
                         "supports tiny autoencoders that upsample 2x per level (as published)")
    if upsampling_factor(vae) != upsampling:
        raise ValueError(
            f"`vae` {name!r} upsamples latents {upsampling_factor(vae)}x and the model's own VAE {upsampling}x: its "
            "images would not have the size a request asks for"
        )
