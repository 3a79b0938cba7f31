"""One runner per model family."""

from baton.models.families.sd15 import StableDiffusionRunner
from baton.models.families.sdxl import StableDiffusionXLRunner

RUNNERS = (StableDiffusionRunner, StableDiffusionXLRunner)

__all__ = ["RUNNERS", "StableDiffusionRunner", "StableDiffusionXLRunner"]
