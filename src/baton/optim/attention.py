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


_PLAIN_PROCESSORS = (AttnProcessor, AttnProcessor2_0)


def set_attention(modules: list[torch.nn.Module], name: str) -> str:
    """Give every plain diffusers attention layer of ``modules`` the SDPA or the classic processor.

    Joint attention (SD3's MMDiT, Flux) has processors of its own, which already call SDPA (so the backend choice
    of ``sdpa_kernel`` reaches them) and which a plain processor cannot replace: they are kept, and ``classic``,
    which has no joint variant, is refused for a model that has them."""
    processor = AttnProcessor() if name == "classic" else AttnProcessor2_0()
    kept: set[str] = set()
    for module in modules:
        if not hasattr(module, "attn_processors"):
            continue
        current = module.attn_processors
        joint = {type(p).__name__ for p in current.values() if not isinstance(p, _PLAIN_PROCESSORS)}
        if joint and name == "classic":
            raise ValueError(f"`attention` 'classic' has no variant for joint attention ({', '.join(sorted(joint))}) "
                             f"in {type(module).__name__}; use 'sdpa', or a backend: 'flash', 'efficient', 'cudnn', "
                             "'math'")
        kept |= joint
        module.set_attn_processor({layer: processor if isinstance(p, _PLAIN_PROCESSORS) else p
                                   for layer, p in current.items()})
    if name == "classic":
        return "attention: classic (materialized attention matrix, the pre-SDPA baseline)"
    backend = "any backend" if name == "sdpa" else name + " backend only"
    joint_note = f"; joint attention keeps {', '.join(sorted(kept))}, which calls SDPA" if kept else ""
    return f"attention: SDPA ({backend}){joint_note}"


def fuse_qkv(denoiser: torch.nn.Module) -> str:
    if not hasattr(denoiser, "fuse_qkv_projections"):
        raise ValueError(f"`fuse_qkv` True: {type(denoiser).__name__} cannot fuse its attention projections; "
                         "leave it False for this model")
    denoiser.fuse_qkv_projections()
    return "fused QKV projections in the denoiser's attention"
