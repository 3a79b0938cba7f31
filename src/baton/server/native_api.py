"""baton's native API: ``POST /v1/generate`` with every engine option and the per-stage timings; ``GET /v1/models``."""

from __future__ import annotations

import time
import uuid
from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from baton.request import GenerationRequest
from baton.server.generation import generate, image_entries, server_state

router = APIRouter(tags=["native"])


class GenerateRequest(BaseModel):
    """Every field of :class:`baton.GenerationRequest`, plus the response's shape and a timeout."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1)
    negative_prompt: str | None = None
    model: str | None = None
    num_images: int = Field(1, ge=1)
    width: int | None = None
    height: int | None = None
    steps: int = 30
    guidance_scale: float | None = None
    seed: int | None = None
    scheduler: str = "default"
    priority: int = 0
    output_format: Literal["png", "jpeg", "webp"] = "png"
    response_format: Literal["b64_json", "url"] = "b64_json"
    timeout_s: float | None = Field(None, gt=0, description="default: the server's request timeout")


@router.post("/v1/generate")
async def generate_images(body: GenerateRequest, http_request: Request) -> dict:
    """Generate images with every engine option; the answer carries the seed and each stage's timings."""
    state = server_state(http_request)
    fields = body.model_dump(exclude={"response_format", "timeout_s"})
    result = await generate(state, GenerationRequest(**fields), body.timeout_s)
    first = result.images[0]
    return {
        "id": uuid.uuid4().hex,
        "created": int(time.time()),
        "model": body.model or state.ready_engine().default_model,
        "seed": result.seed,
        "width": first.width,
        "height": first.height,
        "output_format": body.output_format,
        "latency_s": round(result.latency_s, 4),
        "timings": {
            stage: {"queue_wait_s": round(t.queue_wait_s, 5), "run_s": round(t.run_s, 5),
                    "batch_images": t.batch_images}
            for stage, t in result.timings.items()
        },
        "images": image_entries(state, http_request, result, body.output_format, body.response_format),
    }


@router.get("/v1/models")
def list_models(http_request: Request) -> dict:
    """The loaded models, in OpenAI's list shape, with what baton knows of each."""
    engine = server_state(http_request).ready_engine()
    described = engine.describe()
    return {
        "object": "list",
        "data": [
            {"id": model["name"], "object": "model", "created": 0, "owned_by": "baton", **model}
            for model in described["models"]
        ],
        "engine": {key: value for key, value in described.items() if key != "models"},
    }
