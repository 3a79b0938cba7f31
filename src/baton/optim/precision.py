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
    kept = []
    for encoder in encoders:
        encoder.to(dtype=dtype)  # transformers models: no diffusers warning
        if dtype == torch.float16:
            kept += _keep_in_float32(encoder)
    note = f"; {', '.join(sorted(set(kept)))} kept in float32 (they overflow in float16)" if kept else ""
    return f"text encoders in {_name(dtype)} (embeddings cast to {_name(runner.dtype)} for the denoiser){note}"


def _keep_in_float32(encoder: torch.nn.Module) -> list[str]:
    """Put back in float32 the layers a transformers model says must stay there (T5's feed-forward output,
    ``wo``, which overflows in float16; transformers does this at load, and T5 casts its input to match)."""
    names = getattr(encoder, "_keep_in_fp32_modules", None) or []
    kept = []
    for module_name, module in encoder.named_modules():
        if any(module_name.split(".")[-1] == name for name in names):
            module.to(torch.float32)
            kept.append(f"{type(encoder).__name__} {module_name.split('.')[-1]}")
    return kept


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
