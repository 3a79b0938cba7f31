"""What a caller asks for and what it gets back, and the one place where requests are checked.

Every check runs before any model work and raises :class:`~baton.errors.InvalidRequestError` naming the field,
the value and what is allowed.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from baton.config import RequestLimits
from baton.errors import InvalidRequestError

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

OutputFormat = Literal["png", "jpeg", "webp", "np"]
OUTPUT_FORMATS: tuple[str, ...] = ("png", "jpeg", "webp", "np")
MAX_SEED = 2**63 - 1


DEFAULT_STEPS = 30
_SIZE = re.compile(r"([0-9]{1,6})x([0-9]{1,6})")


def parse_size(text: str) -> tuple[int, int]:
    """``"WIDTHxHEIGHT"`` (ASCII digits, a lowercase ``x``, nothing around them) as ``(width, height)``.

    Raises ``ValueError`` naming what was given: a size is never guessed from a near miss (``" 64X64 "``,
    full-width digits), so a typo cannot quietly become another size."""
    match = _SIZE.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"a size must be WIDTHxHEIGHT in digits, like '512x512', got {text!r}")
    return int(match[1]), int(match[2])


@dataclass(slots=True)
class GenerationRequest:
    """One text-to-image request.

    ``None`` fields take the model's default (its native resolution and its pipeline's guidance scale).
    """

    prompt: str
    negative_prompt: str | None = None
    num_images: int = 1
    width: int | None = None
    height: int | None = None
    steps: int = DEFAULT_STEPS
    guidance_scale: float | None = None
    seed: int | None = None
    """Seed of the request's own CPU generator; ``None`` draws one, reported in the result."""
    scheduler: str = "default"
    """Sampler name (``baton.models.SCHEDULER_NAMES``); ``default`` keeps the model's own."""
    output_format: OutputFormat = "png"
    """``png``/``jpeg``/``webp`` give encoded bytes as well as PIL images; ``np`` gives float pixels in [0, 1]."""
    model: str | None = None
    """Which loaded model serves the request; ``None`` is the engine's first model."""
    priority: int = 0
    """Higher runs sooner: each level counts as ``DenoiseConfig.priority_aging_s`` seconds of waiting when the
    denoiser admits requests, so low priorities are delayed by a bounded time, never starved. Running requests
    are not preempted. Other stages and the stacked mode are first come, first served."""


@dataclass(slots=True)
class StageTiming:
    """How one request fared in one stage."""

    queue_wait_s: float
    """From entering the stage's queue to the start of the batch that ran it."""
    run_s: float
    """Run time of that batch (device time on CUDA, wall time on CPU). For the denoiser, from this request's
    first step to its last, forwards of the requests it shared them with included."""
    batch_images: float
    """Images in that batch, this request's included. For the denoiser, whose batch changes between steps as
    requests join and leave, the mean over this request's steps."""


@dataclass(slots=True)
class GenerationResult:
    """The images of one request and how the engine spent its time on it."""

    request_id: str
    seed: int
    images: list[Image.Image]
    """The images, as PIL images. Empty in a result from an engine process (``baton.cluster``), which carries
    the ``encoded`` bytes only (the pixels for ``"np"``)."""
    encoded: list[bytes] | None = None
    """The images as ``output_format`` bytes, for png/jpeg/webp."""
    pixels: np.ndarray | None = None  # [n, H, W, 3] float32 in [0, 1], for output_format "np"
    timings: dict[str, StageTiming] = field(default_factory=dict)
    latency_s: float = 0.0
    """From submission to the result being ready."""
    warnings: list[str] = field(default_factory=list)
    """What the request got that it did not quite ask for, e.g. a prompt cut to what the text encoder reads."""
    width: int = 0
    height: int = 0
    """The images' size."""

    @property
    def num_images(self) -> int:
        if self.encoded is not None:
            return len(self.encoded)
        return len(self.pixels) if self.pixels is not None else len(self.images)


def pixel_steps(request: GenerationRequest) -> int:
    """What a resolved request costs, as the engine's admission counts it: images x width x height x steps."""
    return request.num_images * request.width * request.height * request.steps


def validate_request(
    request: GenerationRequest,
    limits: RequestLimits,
    models: tuple[str, ...],
    schedulers: tuple[str, ...],
    unsupported_schedulers: dict[str, str] | None = None,
    sampler_max_steps: int | None = None,
    max_size: int | None = None,
    size_multiple: int = 1,
    no_negative_prompt: str | None = None,
) -> None:
    """Refuse a request that cannot be served, naming the field, the value and what is allowed.

    ``schedulers``: the sampler names the request's model can use; ``unsupported_schedulers``: the names it
    cannot, with the reason (told to the user rather than a bare "must be one of"); ``sampler_max_steps``: the
    request's sampler's own step limit, if it has one (LCM's); ``max_size``: the request's model's largest side
    (``RequestLimits.max_size_for``), when the limits do not set one; ``size_multiple``: the model's own multiple
    for sizes (sizes must be multiples of it and of the limits'); ``no_negative_prompt``: why the model takes no
    negative prompt, if it takes none.
    ``width``/``height``/``guidance_scale`` must already be resolved to the model's defaults when ``None``.
    """
    # 1. routing: the model decides every default, so an unknown one is the first thing to report
    _check(request.model in models, "model", request.model, f"must be one of the loaded models {list(models)}")
    # 2. text
    _check(isinstance(request.prompt, str) and request.prompt.strip() != "", "prompt", request.prompt,
           "must be a non-empty string")
    _check(request.negative_prompt is None or isinstance(request.negative_prompt, str), "negative_prompt",
           request.negative_prompt, "must be a string or None")
    _check(request.negative_prompt is None or no_negative_prompt is None, "negative_prompt", request.negative_prompt,
           f"must be unset for model {request.model!r}: {no_negative_prompt}")
    for name in ("prompt", "negative_prompt"):  # lone surrogates (from JSON "\ud800") break the tokenizer
        text = getattr(request, name)
        _check(text is None or _is_unicode_text(text), name, text, "must be valid Unicode text")
    # 3. sizes
    _check(_is_int(request.num_images) and 1 <= request.num_images <= limits.max_images, "num_images",
           request.num_images, f"must be an integer between 1 and {limits.max_images}")
    largest = max_size if max_size is not None else limits.max_size
    multiple = math.lcm(limits.size_multiple, size_multiple)
    for name in ("width", "height"):
        value = getattr(request, name)
        _check(
            _is_int(value) and limits.min_size <= value <= (largest or value) and value % multiple == 0,
            name,
            value,
            f"must be a multiple of {multiple} between {limits.min_size} and {largest}"
            + (f" (the limit of model {request.model!r})" if max_size is not None or multiple != limits.size_multiple
               else ""),
        )
    # 4. sampling
    _check(_is_int(request.steps) and 1 <= request.steps <= limits.max_steps, "steps", request.steps,
           f"must be an integer between 1 and {limits.max_steps}")
    guidance = request.guidance_scale
    _check(
        isinstance(guidance, (int, float)) and not isinstance(guidance, bool) and math.isfinite(guidance)
        and guidance >= 0,
        "guidance_scale",
        guidance,
        "must be a finite number >= 0",
    )
    _check(request.seed is None or (_is_int(request.seed) and 0 <= request.seed <= MAX_SEED), "seed",
           request.seed, f"must be None or an integer between 0 and {MAX_SEED}")
    why_not = (unsupported_schedulers or {}).get(request.scheduler)
    _check(request.scheduler in schedulers, "scheduler", request.scheduler,
           f"must be one of {list(schedulers)}" + (f" ({request.model!r}: {why_not})" if why_not else ""))
    _check(sampler_max_steps is None or request.steps <= sampler_max_steps, "steps", request.steps,
           f"must be at most {sampler_max_steps} with scheduler {request.scheduler!r} (its schedule is a subset of "
           f"the {sampler_max_steps} steps the model was distilled on)")
    _check(_is_int(request.priority) and abs(request.priority) <= limits.max_priority, "priority",
           request.priority, f"must be an integer between {-limits.max_priority} and {limits.max_priority}")
    # 5. output
    _check(request.output_format in OUTPUT_FORMATS, "output_format", request.output_format,
           f"must be one of {list(OUTPUT_FORMATS)}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_unicode_text(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check(ok: bool, name: str, value: object, allowed: str) -> None:
    if not ok:
        raise InvalidRequestError(name, value, allowed)
