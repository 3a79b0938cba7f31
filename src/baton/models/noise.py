"""Random numbers drawn exactly as diffusers draws them from a request's CPU generator, without a host sync.

baton keeps CPU generators so that an image equals the plain diffusers pipeline's for the same seed on any
device. diffusers' ``randn_tensor`` draws on the host and then copies with a blocking ``.to(device)``, which on
CUDA makes the host wait until the device has drained its stream: once per request for the initial latents, and
at every step for the samplers that add noise (Euler-ancestral, LCM; DDIM with ``eta > 0``; the SDE variants of
DPM-Solver). Here the same numbers, from the same generator in the same order, go through pinned memory with a
``non_blocking`` copy (:func:`baton.device.copy_to_device`), queued on the stream ahead of the work that reads
them.

The samplers call ``randn_tensor`` inside their ``step()``. Rather than re-implementing each step, baton gives
``step()`` a :class:`DeviceNoise` as its ``generator`` and routes the samplers' module-level ``randn_tensor``
through :func:`_randn_tensor`, which serves a :class:`DeviceNoise` itself and hands every other call (the stacked
baseline's real generators) to diffusers unchanged.
"""

from __future__ import annotations

import sys

import torch
from diffusers.utils.torch_utils import randn_tensor as diffusers_randn_tensor

from baton.device import copy_to_device


def draw_noise(
    shape: tuple[int, ...], generator: torch.Generator, device: torch.device, dtype: torch.dtype | None
) -> torch.Tensor:
    """``randn_tensor(shape, generator=generator, device=device, dtype=dtype)`` for a CPU ``generator``: the same
    numbers, copied to ``device`` without blocking the host."""
    noise = torch.randn(shape, generator=generator, device="cpu", dtype=dtype, layout=torch.strided)
    return copy_to_device(noise, device)


class DeviceNoise:
    """A request's CPU generator, handed to a sampler's ``step()`` in place of the generator itself."""

    __slots__ = ("generator",)

    def __init__(self, generator: torch.Generator) -> None:
        self.generator = generator

    def draw(self, shape, device, dtype, layout) -> torch.Tensor:
        if layout not in (None, torch.strided):
            raise ValueError(f"`layout` {layout!r} is not supported for step noise; only torch.strided")
        return draw_noise(tuple(shape), self.generator, torch.device(device or "cpu"), dtype)


def _randn_tensor(shape, generator=None, device=None, dtype=None, layout=None, **kwargs):
    if isinstance(generator, DeviceNoise):
        return generator.draw(shape, device, dtype, layout)
    return diffusers_randn_tensor(shape, generator=generator, device=device, dtype=dtype, layout=layout, **kwargs)


def step_generator(scheduler: object, generator: torch.Generator) -> DeviceNoise | torch.Generator:
    """What a request passes to its sampler's ``step()`` as ``generator``: a :class:`DeviceNoise` where the
    sampler's module draws through diffusers' ``randn_tensor`` (routed through :func:`_randn_tensor` on first
    use, whatever the sampler class), else the generator itself."""
    module = sys.modules[type(scheduler).__module__]
    if getattr(module, "randn_tensor", None) is diffusers_randn_tensor:
        module.randn_tensor = _randn_tensor
    return DeviceNoise(generator) if getattr(module, "randn_tensor", None) is _randn_tensor else generator
