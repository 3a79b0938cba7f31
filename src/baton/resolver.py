"""Filling in a request's defaults and checking it, from plain data about the loaded models.

An :class:`~baton.Engine` builds its :class:`RequestResolver` from its model runners; an engine in another process
sends the same object over, so a server or router checks every request, naming the field, before any work is
sent anywhere. No torch here: the resolver is small and picklable.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from baton.config import RequestLimits
from baton.request import GenerationRequest, validate_request


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """What request checks need to know about one loaded model."""

    name: str
    default_size: int
    """Width and height when a request gives none."""
    default_guidance_scale: float
    max_size: int
    """The largest width or height a request may ask for (``RequestLimits.max_size_for``)."""
    schedulers: tuple[str, ...]
    """The sampler names requests to this model may use."""
    unsupported_schedulers: dict[str, str]
    """Sampler names it refuses, with the reason told to the user."""
    sampler_max_steps: dict[str, int]
    """Samplers with a step limit of their own (LCM's), and that limit."""
    size_multiple: int = 8
    """Widths and heights must be multiples of this (8 for SD's VAE; 16 where a transformer takes 2x2 patches)."""
    negative_prompt: str | None = None
    """Why the model takes no ``negative_prompt`` (Flux); ``None``: it takes one."""


@dataclass(frozen=True, slots=True)
class RequestResolver:
    """Resolves requests for a set of loaded models: the first model is the default."""

    limits: RequestLimits
    models: dict[str, ModelSpec]

    @property
    def default_model(self) -> str:
        return next(iter(self.models))

    @property
    def max_sizes(self) -> dict[str, int]:
        return {name: spec.max_size for name, spec in self.models.items()}

    def resolve(self, request: GenerationRequest | None = None, /, **fields: Any) -> GenerationRequest:
        """The request with its model's defaults filled in, validated. Raises
        :class:`~baton.InvalidRequestError` on bad input; does no model work."""
        if request is None:
            try:
                request = GenerationRequest(**fields)
            except TypeError as exc:
                known = [f.name for f in dataclasses.fields(GenerationRequest)]
                raise TypeError(f"{exc}; request fields are {known}") from None
        elif fields:
            request = dataclasses.replace(request, **fields)
        model = request.model if request.model is not None else self.default_model
        spec = self.models.get(model) if isinstance(model, str) else None
        if spec is None:  # an unknown model: the check below names it, before any other field
            validate_request(request, self.limits, tuple(self.models), ())
            return request
        request = dataclasses.replace(
            request,
            model=model,
            width=spec.default_size if request.width is None else request.width,
            height=spec.default_size if request.height is None else request.height,
            guidance_scale=spec.default_guidance_scale if request.guidance_scale is None else request.guidance_scale,
        )
        validate_request(request, self.limits, tuple(self.models), spec.schedulers, spec.unsupported_schedulers,
                         spec.sampler_max_steps.get(request.scheduler), spec.max_size, spec.size_multiple,
                         spec.negative_prompt)
        return request
