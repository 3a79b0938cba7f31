"""The in-flight state of one request as it travels through the stages."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field

import torch

from baton.device import Mark, elapsed_s
from baton.models.runner import ModelRunner, PromptEmbeddings
from baton.protocol import PreviewCallback, ProgressCallback
from baton.request import GenerationRequest, GenerationResult, StageTiming

logger = logging.getLogger(__name__)



@dataclass(slots=True)
class StageRecord:
    """When a request entered, started and left one stage."""

    enqueued: float
    started: Mark | None = None
    finished: Mark | None = None
    batch_images: float = 0  # the denoiser's is a mean over the request's steps

    def timing(self) -> StageTiming:
        if self.started is None or self.finished is None:
            return StageTiming(0.0, 0.0, self.batch_images)
        return StageTiming(
            queue_wait_s=max(0.0, self.started.wall - self.enqueued),
            run_s=elapsed_s(self.started, self.finished),
            batch_images=self.batch_images,
        )


@dataclass(slots=True, eq=False)
class Job:
    """One admitted request: its inputs, its future, and what each stage has produced for it so far."""

    request: GenerationRequest  # defaults resolved and validated
    runner: ModelRunner
    future: Future
    request_id: str
    seed: int
    submitted_at: float
    progress: ProgressCallback | None = None
    preview: PreviewCallback | None = None
    preview_every: int = 0
    denoising: Callable[[], None] | None = None
    """Called once, when the request starts denoising (before its first step)."""
    warnings: list[str] = field(default_factory=list)
    records: dict[str, StageRecord] = field(default_factory=dict)
    # Stage outputs. `ready` is the producing stage's CUDA event for the tensors (None on a CPU).
    embeddings: PromptEmbeddings | None = None
    latents: torch.Tensor | None = None  # [n, C, H/8, W/8], after denoising
    pixels: torch.Tensor | None = None  # [n, H, W, 3] on the host: uint8, or float32 in [0, 1] for "np"
    ready: torch.cuda.Event | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def done(self) -> bool:
        """Finished, failed or cancelled by the caller: no stage should spend more work on it."""
        return self.future.done()

    def enter(self, stage: str, now: float) -> None:
        self.records[stage] = StageRecord(enqueued=now)

    def report_denoising(self) -> None:
        if self.denoising is None:
            return
        try:
            self.denoising()
        except Exception:  # a caller's callback must never break the batch it rides in
            logger.exception("denoising callback of request %s raised; ignoring it", self.request_id)
        self.denoising = None

    def report_progress(self, steps_done: int, steps_total: int) -> None:
        if self.progress is None:
            return
        try:
            self.progress(steps_done, steps_total)
        except Exception:  # a caller's callback must never break the batch it rides in
            logger.exception("progress callback of request %s raised; ignoring it", self.request_id)
            self.progress = None

    def report_preview(self, steps_done: int, steps_total: int, latents: torch.Tensor) -> None:
        """A cheap preview every ``preview_every`` steps (not at the last: the real image follows)."""
        if self.preview is None or steps_done % self.preview_every or steps_done >= steps_total:
            return
        try:
            # one small device-to-host copy, only for requests that asked for previews
            self.preview(steps_done, steps_total,
                         self.runner.preview_rgb(latents, self.request.height, self.request.width))
        except Exception:
            logger.exception("preview callback of request %s raised; ignoring it", self.request_id)
            self.preview = None

    def finish(self, result: GenerationResult) -> None:
        self._settle(lambda: self.future.set_result(result))

    def fail(self, error: BaseException) -> None:
        self._settle(lambda: self.future.set_exception(error))

    def _settle(self, settle: Callable[[], None]) -> None:
        with self._lock:
            if not self.future.done():
                try:
                    settle()
                except InvalidStateError:  # the caller cancelled it in between; nothing is owed
                    pass
        # Free device memory now, not when the caller drops the result.
        self.embeddings = self.latents = self.pixels = self.ready = None
