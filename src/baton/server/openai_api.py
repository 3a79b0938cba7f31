"""``POST /v1/images/generations``, shaped like OpenAI's images API, so the official client works unchanged.

Accepted and ignored (documented): ``quality``, ``style``, ``user``, ``background``, ``moderation``,
``output_compression``, ``partial_images``. ``stream`` is refused (streaming is the native endpoint's).
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from baton.request import GenerationRequest
from baton.server.errors import ApiError
from baton.server.generation import IMAGE_ROUTE, generate, image_entries, parse_size, warning_headers
from baton.server.schema import OPENAI_PARAMS, ImageGenerationRequest
from baton.server.state import server_state

router = APIRouter(tags=["openai"])
images_router = APIRouter(tags=["openai"])
"""The route serving images by URL: behind the key like the rest, or open with capability URLs."""


class ImageData(BaseModel):
    b64_json: str | None = None
    url: str | None = None


class ImagesResponse(BaseModel):
    created: int
    data: list[ImageData]
    output_format: str
    size: str
    warnings: list[str] | None = None
    """baton's addition: e.g. a prompt longer than the text encoder reads (also in ``X-Baton-Warnings``)."""


@router.post("/v1/images/generations", response_model=ImagesResponse, response_model_exclude_none=True)
async def create_images(body: ImageGenerationRequest, http_request: Request) -> JSONResponse:
    """Generate ``n`` images from ``prompt``."""
    state = server_state(http_request)
    if body.stream:
        raise ApiError(400, "`stream` is not supported here; use POST /v1/generate", param="stream",
                       code="unsupported")
    width, height = parse_size(body.size)
    steps = min(state.config.openai_steps, state.ready_engine().resolver.limits.max_steps)
    request = GenerationRequest(prompt=body.prompt, model=body.model, num_images=body.n, width=width, height=height,
                                steps=steps, output_format=body.output_format)
    result = await generate(state, http_request, request, timeout_s=None, endpoint="/v1/images/generations",
                            params=OPENAI_PARAMS)
    answer = ImagesResponse(
        created=int(time.time()),
        data=image_entries(state, result, body.output_format, body.response_format),
        output_format=body.output_format,
        size=f"{result.width}x{result.height}",
        warnings=result.warnings or None,
    )
    return JSONResponse(answer.model_dump(exclude_none=True), headers=warning_headers(result.warnings))


@router.post("/v1/images/edits", include_in_schema=False)
@router.post("/v1/images/variations", include_in_schema=False)
def not_supported_yet(http_request: Request) -> None:
    """OpenAI's other image endpoints: a clear 404 rather than a 405 from the image route's path."""
    raise ApiError(404, f"POST {http_request.url.path} is not supported yet; baton generates images from text "
                        "(POST /v1/images/generations)", type_="not_found_error", code="not_supported")


@images_router.head(IMAGE_ROUTE + "/{name}", include_in_schema=False)
@images_router.get(IMAGE_ROUTE + "/{name}", response_class=Response,
                   responses={200: {"content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}}}, 404: {}})
def get_image(name: str, http_request: Request) -> Response:
    """An image generated with ``response_format="url"``, while it is kept."""
    image = server_state(http_request).images.get(name)
    if image is None:
        raise ApiError(404, f"no image {name!r}: unknown, or expired", type_="not_found_error", param="name",
                       code="image_not_found")
    return Response(image.data, media_type=image.media_type)
