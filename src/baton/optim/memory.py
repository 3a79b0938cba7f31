"""Memory savers: model CPU offload, sequential CPU offload, VAE slicing and tiling.

Model offload here is baton's own rather than ``pipeline.enable_model_cpu_offload``: diffusers chains its hooks in
pipeline order (text encoder → UNet → VAE) and frees them at the end of a call, but a step-batching engine
interleaves those calls (it encodes a newcomer between two denoiser steps of others). :class:`ModelOffload`
keeps exactly one component on the device, the one about to run, which is the guarantee a user of offload wants.
It runs on one thread (offload turns fused stages on), so components never race for the device.
"""

from __future__ import annotations

import logging
import threading

import torch

logger = logging.getLogger(__name__)


class ModelOffload:
    """Components (``text``, ``denoiser``, ``vae``) live in host memory; :meth:`use` moves one to the device and
    sends the one before it back."""

    def __init__(
        self, components: dict[str, list[torch.nn.Module]], device: torch.device, parked: list[torch.nn.Module] = ()
    ) -> None:
        self.components = components
        self.device = device
        self.active: str | None = None
        self.moves = 0
        self._owner: int | None = None
        for module in [*parked, *(m for modules in components.values() for m in modules)]:
            module.to("cpu")

    def use(self, component: str) -> None:
        if component == self.active or not self.components.get(component):
            return  # already there, or nothing to move (text encoders kept on the CPU for good)
        thread = threading.get_ident()
        if self._owner is None:
            self._owner = thread
        elif self._owner != thread:
            raise RuntimeError("model offload is driven from two threads; it needs fused stages (one thread)")
        if self.active is not None:
            # the stages run on different streams of this thread: let the last user's kernels and the weights'
            # own upload finish before the weights leave the device
            torch.cuda.synchronize(self.device)
            for module in self.components[self.active]:
                module.to("cpu")
        for module in self.components.get(component, ()):
            module.to(self.device)
        self.active = component
        self.moves += 1


def sequential_offload(modules: list[torch.nn.Module], device: torch.device) -> None:
    """Weights stay in host memory and stream to ``device`` one layer at a time, as each layer runs."""
    from accelerate import cpu_offload

    for module in modules:
        cpu_offload(module, execution_device=device)


def vae_slicing_and_tiling(vae: torch.nn.Module, slicing: bool, tiling: bool) -> list[str]:
    """Turn on VAE slicing (one image at a time) and tiling (overlapping tiles) where asked."""
    applied = []
    if slicing:
        vae.enable_slicing()
        applied.append("vae slicing: one image per decode")
    if tiling:
        vae.enable_tiling()
        applied.append("vae tiling: overlapping tiles for large images")
    return applied
