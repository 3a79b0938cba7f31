"""The types model runners and optimizations share, so neither package imports the other's modules for them.

``baton.optim`` builds what a runner runs with (a compiled denoiser, a prompt cache, an offload schedule) and hands
it over as one :class:`Optimized`; the runner holds it and calls it through the small protocols here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch


@dataclass(frozen=True, slots=True)
class PromptInput:
    """What the text encoder needs of one request."""

    prompt: str
    negative_prompt: str | None
    needs_negative: bool


@dataclass(slots=True)
class PromptEmbeddings:
    """Text conditioning of one prompt: one row per tensor, not yet repeated per image."""

    tensors: dict[str, torch.Tensor]  # family-specific names, each [1, ...]; e.g. "prompt": [1, 77, D]


@dataclass(slots=True)
class Conditioning:
    """Denoiser inputs besides latents and timesteps.

    ``hidden_states`` and ``added`` have one row per denoiser sample and are concatenated, padded and sliced by
    rows; ``shared`` holds tensors that are the same for every row of a batch key (Flux's position ids, which
    depend on the image size only), taken once from the first request of a batch."""

    hidden_states: torch.Tensor  # [rows, seq, D]
    added: dict[str, torch.Tensor] = field(default_factory=dict)  # each [rows, ...]; SDXL: text_embeds, time_ids;
    # guidance-distilled UNets: timestep_cond; SD3 / Flux: pooled; Flux-dev: guidance
    shared: dict[str, torch.Tensor] = field(default_factory=dict)  # per batch key, no row dimension

    @property
    def rows(self) -> int:
        return self.hidden_states.shape[0]

    @staticmethod
    def concat(parts: list[Conditioning]) -> Conditioning:
        if len(parts) == 1:
            return parts[0]
        return Conditioning(
            hidden_states=torch.cat([p.hidden_states for p in parts]),
            added={key: torch.cat([p.added[key] for p in parts]) for key in parts[0].added},
            shared=parts[0].shared,
        )

    def map_rows(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Conditioning:
        """The same conditioning with ``fn`` applied to every per-row tensor (padding, slicing, copying)."""
        return Conditioning(fn(self.hidden_states), {k: fn(v) for k, v in self.added.items()}, dict(self.shared))

    def tensors(self) -> list[torch.Tensor]:
        return [self.hidden_states, *self.added.values(), *self.shared.values()]


Denoiser = Callable[[torch.Tensor, torch.Tensor, Conditioning], torch.Tensor]
"""(latents [rows, ...], timesteps [rows], conditioning) → the model's prediction, shaped like the latents."""


class EncodingCache(Protocol):
    """Prompt embeddings kept across requests (``baton.optim.prompt_cache.PromptCache``)."""

    def encode(
        self, inputs: list[PromptInput], encode: Callable[[list[PromptInput]], list[PromptEmbeddings]]
    ) -> list[PromptEmbeddings]: ...

    def stats(self) -> dict[str, Any]: ...


class Offload(Protocol):
    """Moves one component at a time onto the device (``baton.optim.memory.ModelOffload``)."""

    def use(self, component: str) -> None: ...


@dataclass(slots=True)
class Optimized:
    """What ``baton.optim.apply_optimizations`` built for one runner; the defaults are the plain eager model."""

    denoiser: Denoiser | None = None
    """The denoiser the stages call, when not the eager one: compiled or CUDA-graphed over static shape buckets."""
    text_device: torch.device | None = None
    """Where the text encoders run, when not the model's device (the CPU, ``prompt_cache.text_encoders_on_cpu``)."""
    prompt_cache: EncodingCache | None = None
    offload: Offload | None = None
    attention_backends: list | None = None
    """SDPA backends the denoiser's calls are restricted to (``torch.nn.attention.sdpa_kernel``); None: any."""
    lines: list[str] = field(default_factory=list)
    """What was applied, one line each, for logs and ``describe()``."""
    warmup_s: float | None = None
