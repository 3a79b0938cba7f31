"""The HTTP request bodies, strict: JSON numbers for numeric fields, booleans for booleans, strings for text.

The native body is derived from :class:`baton.GenerationRequest` (its fields, types and defaults), so the HTTP
API cannot drift from the engine's; the limits (sizes, steps, images) are checked in one place, the engine's
``validate_request``, whose errors name the field. OpenAI's body is OpenAI's, not ours, so it is written out.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from baton.config import RequestLimits
from baton.request import MAX_SEED, GenerationRequest

STRICT = ConfigDict(extra="forbid", strict=True)
"""No coercion: ``"n": "2"``, ``"n": true`` and ``"stream": "yes"`` are errors, not 2, 1 and true."""
EncodedFormat = Literal["png", "jpeg", "webp"]
ResponseFormat = Literal["b64_json", "url"]

_NATIVE_EXAMPLES = [
    {"prompt": "one large red circle in the center on a black background", "steps": 20, "seed": 0},
    {"prompt": "2 small blue squares, top left", "num_images": 2, "steps": 20,
     "width": 64, "height": 64, "scheduler": "euler", "output_format": "jpeg", "response_format": "url"},
]
_FIELD_NOTES = {
    "prompt": "what to draw",
    "negative_prompt": "what to steer away from (with classifier-free guidance)",
    "num_images": "images generated from this prompt; one `seed` draws them all, as in diffusers",
    "width": "pixels; default: the model's native size; at most the model's `max_size` (GET /v1/models)",
    "height": "pixels; default: the model's native size; at most the model's `max_size` (GET /v1/models)",
    "steps": "denoising steps",
    "guidance_scale": "classifier-free guidance; default: the model's",
    "seed": "default: drawn, and reported in the answer",
    "scheduler": "sampler: one of the model's `schedulers` (GET /v1/models)",
    "output_format": "image encoding",
    "model": "a loaded model (GET /v1/models); default: the first",
    "priority": "higher runs sooner; a lower one is delayed a bounded time, never starved",
}
# the engine's own output formats include "np" (float pixels), which has no HTTP encoding
_HTTP_TYPES = {"output_format": EncodedFormat}


def _generation_fields() -> dict[str, tuple]:
    hints = typing.get_type_hints(GenerationRequest)
    fields = {}
    for spec in dataclasses.fields(GenerationRequest):
        default = ... if spec.default is dataclasses.MISSING else spec.default
        fields[spec.name] = (_HTTP_TYPES.get(spec.name, hints[spec.name]),
                             Field(default, description=_FIELD_NOTES.get(spec.name)))
    return fields


_HTTP_FIELDS = {
    "response_format": (ResponseFormat, Field("b64_json", description="images inline, or as URLs")),
    "timeout_s": (float | None, Field(None, gt=0, description="default: the server's request timeout (the shorter "
                                                              "of the two applies)")),
    "stream": (bool, Field(False, description="answer with Server-Sent Events: progress, previews, then the "
                                              "result")),
    "preview_every": (int, Field(0, ge=0, description="with `stream`: a preview every k steps (0: none)")),
}
"""What the native endpoint adds to a generation request: the answer's shape, streaming and a timeout."""
HTTP_ONLY_FIELDS = frozenset(_HTTP_FIELDS)

GenerateRequest = create_model(
    "GenerateRequest",
    __config__=ConfigDict(**STRICT, json_schema_extra={"examples": _NATIVE_EXAMPLES}),
    __doc__="Every field of baton's GenerationRequest, plus the answer's shape, streaming and a timeout.",
    **_generation_fields(),
    **_HTTP_FIELDS,
)


class ImageGenerationRequest(BaseModel):
    """OpenAI's image generation body. Unknown fields are refused (400 naming them), so typos do not pass."""

    model_config = ConfigDict(**STRICT, json_schema_extra={"examples": [
        {"prompt": "one large red circle in the center on a black background", "n": 1, "size": "64x64"},
        {"prompt": "please draw two small blue squares at the top left", "n": 2, "size": "auto",
         "response_format": "url", "output_format": "webp"},
    ]})

    prompt: str
    model: str | None = None
    n: int = Field(1, description="images to generate")
    size: str | None = Field(None, description="'WIDTHxHEIGHT' (ASCII digits, e.g. '512x512') or 'auto' (the "
                                               "model's native size)")
    response_format: ResponseFormat = "b64_json"
    output_format: EncodedFormat = "png"
    stream: bool = False
    # accepted for compatibility, ignored
    quality: str | None = None
    style: str | None = None
    user: str | None = None
    background: str | None = None
    moderation: str | None = None
    output_compression: int | None = None
    partial_images: int | None = None


OPENAI_PARAMS = {"num_images": ("n", None), "width": ("size", "its width"), "height": ("size", "its height")}
"""Engine fields the OpenAI endpoint calls otherwise: (the client's name, which part of it)."""


def with_engine_limits(openapi: dict, limits: RequestLimits, max_size: int | None,
                       choices: dict[str, list[str]] | None = None, size_multiple: int | None = None) -> dict:
    """``openapi`` with the engine's limits on the request fields, so the schema tells clients (and fuzzers) what
    the engine will take; the engine still checks them itself. ``max_size``: the largest any loaded model takes
    (each model's own is in ``GET /v1/models``); ``choices``: the values a text field takes (``model``, and
    ``scheduler``: the samplers any loaded model takes); ``size_multiple``: a multiple every loaded model takes
    (16 where one is a transformer over 2x2 patches), else the limits'."""
    bounds = {
        "num_images": (1, limits.max_images), "n": (1, limits.max_images), "steps": (1, limits.max_steps),
        "priority": (-limits.max_priority, limits.max_priority),
        "width": (limits.min_size, max_size), "height": (limits.min_size, max_size), "seed": (0, MAX_SEED),
    }
    for body in ("GenerateRequest", "ImageGenerationRequest"):
        properties = openapi.get("components", {}).get("schemas", {}).get(body, {}).get("properties", {})
        for name, (low, high) in bounds.items():
            if name not in properties:
                continue
            field = properties[name]
            integer = next((option for option in field.get("anyOf", [field]) if option.get("type") == "integer"),
                           None)
            if integer is None:
                continue
            integer["minimum"] = low
            if high is not None:
                integer["maximum"] = high
            if name in ("width", "height"):
                integer["multipleOf"] = size_multiple or limits.size_multiple
        guidance = properties.get("guidance_scale", {})
        for option in guidance.get("anyOf", [guidance]):
            if option.get("type") == "number":
                option["minimum"] = 0
        for name, values in (choices or {}).items():
            field = properties.get(name)
            text = next((option for option in field.get("anyOf", [field]) if option.get("type") == "string"),
                        None) if field else None
            if text is not None:
                text["enum"] = values
    return openapi
