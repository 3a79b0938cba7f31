"""Precision per component: the denoiser runs in the engine's dtype; the text encoders and the VAE may differ."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import torch

from baton.device import resolve_dtype
from baton.models.builtin import quiet_casts

if TYPE_CHECKING:
    from baton.models.runner import ModelRunner


def component_dtype(field: str, name: str, engine_dtype: torch.dtype, device: torch.device) -> torch.dtype:
    """``auto`` → the engine's dtype; otherwise the named dtype, refused where the device cannot run it."""
    if name == "auto":
        return engine_dtype
    try:
        return resolve_dtype(name, device)
    except ValueError as exc:
        raise ValueError(str(exc).replace("`dtype`", f"`{field}`")) from None


def set_text_encoder_dtype(runner: ModelRunner, dtype: torch.dtype) -> str | None:
    encoders = runner.text_encoders()
    if all(encoder.dtype == dtype for encoder in encoders):
        return None
    for encoder in encoders:
        encoder.to(dtype=dtype)  # transformers models: no diffusers warning
    return f"text encoders in {_name(dtype)} (embeddings cast to {_name(runner.dtype)} for the denoiser)"


def set_vae_dtype(runner: ModelRunner, dtype: torch.dtype) -> str | None:
    """Decode in ``dtype``. The pipeline keeps its own VAE for the stacked baseline; a copy decodes when they
    differ (a VAE is small next to the denoiser: 84M parameters for SD)."""
    if runner.vae.dtype == dtype:
        return None
    if runner.vae is runner.pipeline.vae:
        runner.vae = copy.deepcopy(runner.vae)
    with quiet_casts():
        runner.vae.to(dtype=dtype)
    return f"vae in {_name(dtype)}"


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
