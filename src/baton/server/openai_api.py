"""``POST /v1/images/generations``, shaped like OpenAI's images API, so the official client works unchanged.

Accepted and ignored (documented): ``quality``, ``style``, ``user``, ``background``, ``moderation``,
``output_compression``, ``partial_images``. ``stream`` is refused (streaming is the native endpoint's).
"""

from __future__ import annotations

import time
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from baton.request import GenerationRequest
from baton.server.errors import ApiError
from baton.server.generation import generate, image_entries, parse_size, server_state

router = APIRouter(tags=["openai"])


class ImageGenerationRequest(BaseModel):
    """OpenAI's image generation body. Unknown fields are refused (400 naming them), so typos do not pass."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"prompt": "a red fox in the snow", "n": 1, "size": "64x64"},
        {"prompt": "a bowl of ramen", "n": 2, "size": "64x64", "response_format": "url", "output_format": "webp"},
    ]})

    prompt: str = Field(min_length=1)
    model: str | None = None
    n: int = Field(1, ge=1)
    size: str | None = Field(None, description="'WIDTHxHEIGHT' or 'auto' (the model's native size)")
    response_format: Literal["b64_json", "url"] = "b64_json"
    output_format: Literal["png", "jpeg", "webp"] = "png"
    stream: bool = False
    # accepted for compatibility, ignored
    quality: str | None = None
    style: str | None = None
    user: str | None = None
    background: str | None = None
    moderation: str | None = None
    output_compression: int | None = None
    partial_images: int | None = None


class ImageData(BaseModel):
    b64_json: str | None = None
    url: str | None = None


class ImagesResponse(BaseModel):
    created: int
    data: list[ImageData]
    output_format: str
    size: str


@router.post("/v1/images/generations", response_model=ImagesResponse, response_model_exclude_none=True)
async def create_images(body: ImageGenerationRequest, http_request: Request) -> dict:
    """Generate ``n`` images from ``prompt``."""
    state = server_state(http_request)
    if body.stream:
        raise ApiError(400, "`stream` is not supported here; use POST /v1/generate", param="stream",
                       code="unsupported")
    width, height = parse_size(body.size)
    steps = min(state.config.openai_steps, state.ready_engine().config.limits.max_steps)
    request = GenerationRequest(prompt=body.prompt, model=body.model, num_images=body.n, width=width, height=height,
                                steps=steps, output_format=body.output_format)
    result = await generate(state, http_request, request, timeout_s=None, endpoint="/v1/images/generations",
                            count_field="n")
    first = result.images[0] if result.images else None
    return {
        "created": int(time.time()),
        "data": image_entries(state, http_request, result, body.output_format, body.response_format),
        "output_format": body.output_format,
        "size": f"{first.width}x{first.height}" if first else "",
    }


@router.get("/v1/images/{name}", name="get_image", response_class=Response,
            responses={200: {"content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}}}, 404: {}})
def get_image(name: str, http_request: Request) -> Response:
    """An image generated with ``response_format="url"``, while it is kept."""
    image = server_state(http_request).images.get(name)
    if image is None:
        raise ApiError(404, f"no image {name!r}: unknown, or expired", type_="not_found_error", param="name",
                       code="image_not_found")
    return Response(image.data, media_type=image.media_type)
