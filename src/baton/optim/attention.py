"""Attention: PyTorch SDPA with a chosen backend, diffusers' classic processor (the baseline), fused QKV."""

from __future__ import annotations

import torch
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

_CUDA_ONLY = ("efficient", "cudnn")


def sdpa_backends(name: str) -> list | None:
    """The ``sdpa_kernel`` backends for an ``attention`` option; ``None`` leaves PyTorch's choice alone."""
    from torch.nn.attention import SDPBackend

    return {
        "flash": [SDPBackend.FLASH_ATTENTION],
        "efficient": [SDPBackend.EFFICIENT_ATTENTION],
        "cudnn": [SDPBackend.CUDNN_ATTENTION],
        "math": [SDPBackend.MATH],
    }.get(name)


def check_attention(name: str, device: torch.device) -> None:
    if name in _CUDA_ONLY and device.type != "cuda":
        raise ValueError(
            f"`attention` {name!r} is a CUDA kernel and the device is {device}; use 'sdpa', 'flash', 'math' or "
            "'classic'"
        )


def set_attention(modules: list[torch.nn.Module], name: str) -> str:
    """Give every diffusers attention layer of ``modules`` the SDPA or the classic processor."""
    processor = AttnProcessor() if name == "classic" else AttnProcessor2_0()
    for module in modules:
        if hasattr(module, "set_attn_processor"):
            module.set_attn_processor(processor)
    if name == "classic":
        return "attention: classic (materialized attention matrix, the pre-SDPA baseline)"
    return f"attention: SDPA ({'any backend' if name == 'sdpa' else name + ' backend only'})"


def fuse_qkv(unet: torch.nn.Module) -> str:
    unet.fuse_qkv_projections()
    return "fused QKV projections in the denoiser's self-attention"
