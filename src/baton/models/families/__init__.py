"""One runner per model family."""

from baton.models.families.flux import FluxRunner
from baton.models.families.pixart import PixArtSigmaRunner
from baton.models.families.sd3 import StableDiffusion3Runner
from baton.models.families.sd15 import StableDiffusionRunner
from baton.models.families.sdxl import StableDiffusionXLRunner

RUNNERS = (StableDiffusionRunner, StableDiffusionXLRunner, StableDiffusion3Runner, FluxRunner, PixArtSigmaRunner)

__all__ = ["RUNNERS", "FluxRunner", "PixArtSigmaRunner", "StableDiffusion3Runner", "StableDiffusionRunner",
           "StableDiffusionXLRunner"]
