"""Text encoding: a batch of prompts of one model goes through its text encoder(s) in one pass."""

from __future__ import annotations

from collections.abc import Hashable

from baton.models.runner import PromptInput
from baton.stage_names import TEXT_ENCODE
from baton.stages.base import BatchStage
from baton.stages.job import Job


class TextEncodeStage(BatchStage):
    name = TEXT_ENCODE

    def batch_key(self, job: Job) -> Hashable:
        return job.runner.name

    def batch_size(self, job: Job) -> int:
        return 1  # one prompt per request, whatever its image count

    def run_batch(self, jobs: list[Job]) -> None:
        runner = jobs[0].runner
        inputs = [
            PromptInput(
                prompt=job.request.prompt,
                negative_prompt=job.request.negative_prompt,
                needs_negative=runner.uses_guidance(job.request.guidance_scale),
            )
            for job in jobs
        ]
        for job, embeddings in zip(jobs, runner.encode(inputs), strict=True):
            job.embeddings = embeddings
            self.hand_on(job)
