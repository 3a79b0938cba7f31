"""Replacement VAEs for decoding: the tiny autoencoder (built in with random weights, or loaded) or any VAE folder.

``taesd`` and ``taesdxl`` are the published architectures of madebyollin's tiny autoencoders (SD1.x and SDXL
latents); they share one architecture and differ only in weights, so both are ``AutoencoderTiny()``'s defaults.
Built here with random weights, they decode noise, but their cost and memory equal the real ones'.
"""

from __future__ import annotations

import logging
import os
import warnings

import torch
from diffusers import AutoencoderKL, AutoencoderTiny, ModelMixin

from baton.models.builtin import quiet_casts

logger = logging.getLogger(__name__)

BUILTIN_VAES: tuple[str, ...] = ("tiny", "taesd", "taesdxl")
"""``tiny`` is the tiny autoencoder for the model's family: ``taesdxl`` for SDXL, ``taesd`` otherwise."""


def resolve_vae_name(name: str, family: str) -> str:
    if name == "tiny":
        return "taesdxl" if family == "sdxl" else "taesd"
    return name


def load_vae(name: str, device: torch.device, dtype: torch.dtype) -> ModelMixin:
    """``taesd`` / ``taesdxl`` (random weights), or a folder / hub id holding an AutoencoderTiny or AutoencoderKL."""
    if name in BUILTIN_VAES:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(0)
            vae = AutoencoderTiny()
    else:
        vae = _load_pretrained(name)
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


def check_vae_fits(vae: ModelMixin, latent_channels: int, name: str) -> None:
    """A replacement must decode the model's latents."""
    channels = vae.config.latent_channels
    if channels != latent_channels:
        raise ValueError(
            f"`vae` {name!r} decodes {channels}-channel latents and the model makes {latent_channels}-channel ones"
        )
