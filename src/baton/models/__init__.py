"""Models: built-in architectures, loading, and the per-family runners."""

from baton.models.builtin import SPECS
from baton.models.registry import BUILTIN_MODELS, ModelLoadError, load_model
from baton.models.runner import Conditioning, ModelRunner, PromptEmbeddings, PromptInput
from baton.models.schedulers import SCHEDULER_NAMES

__all__ = [
    "BUILTIN_MODELS",
    "SCHEDULER_NAMES",
    "SPECS",
    "Conditioning",
    "ModelLoadError",
    "ModelRunner",
    "PromptEmbeddings",
    "PromptInput",
    "load_model",
]
