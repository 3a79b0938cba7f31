"""Sampler names users can ask for, and per-request scheduler copies.

diffusers schedulers keep state (``step_index``, multistep histories) and are not thread-safe, so every request
gets its own copy, made from one template per (model, sampler) built at first use.
"""

from __future__ import annotations

import copy
import inspect
import threading

import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    FlowMatchHeunDiscreteScheduler,
    HeunDiscreteScheduler,
    LCMScheduler,
    PNDMScheduler,
    UniPCMultistepScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from baton.models.builtin import muted

SCHEDULER_CLASSES: dict[str, type[SchedulerMixin] | None] = {
    "default": None,  # the model's own scheduler, as its folder configures it
    "euler": EulerDiscreteScheduler,
    "euler_a": EulerAncestralDiscreteScheduler,
    "ddim": DDIMScheduler,
    "dpmpp_2m": DPMSolverMultistepScheduler,
    "unipc": UniPCMultistepScheduler,
    "pndm": PNDMScheduler,
    "heun": HeunDiscreteScheduler,
    "lcm": LCMScheduler,  # for latent-consistency-distilled models (few steps); see ModelRunner.embeds_guidance
}
FLOW_MATCH_SCHEDULER_CLASSES: dict[str, type[SchedulerMixin] | None] = {
    "default": None,
    "euler": FlowMatchEulerDiscreteScheduler,
    "heun": FlowMatchHeunDiscreteScheduler,
}
"""Samplers of flow-matching models (SD3, Flux): they integrate a velocity, where the others above denoise."""
SCHEDULER_NAMES: tuple[str, ...] = tuple(SCHEDULER_CLASSES)
ZERO_TERMINAL_SNR = "rescale_betas_zero_snr"
"""The config key of a noise schedule rescaled to end at pure noise (Lin et al. 2023). A model trained on it is
sampled wrongly by a sampler class that lacks the key (PNDM, Heun): from_config would silently drop the rescale."""
SYNCING_ON_CUDA: dict[type[SchedulerMixin], str] = {
    UniPCMultistepScheduler: "UniPC's solver reads values back to the host at every step (5 or 6 blocking copies "
    "and a linalg.solve), which would stall the GPU between steps; dpmpp_2m is the multistep sampler that does not",
}
"""Samplers whose step() makes the host wait for the GPU: refused on CUDA, where the step loop must not sync."""


def unsupported_samplers(config, device: torch.device | None = None,
                         own_class: type[SchedulerMixin] | None = None,
                         classes: dict[str, type[SchedulerMixin] | None] = SCHEDULER_CLASSES) -> dict[str, str]:
    """Sampler names that cannot sample a model with this scheduler config on ``device``, each with the reason;
    ``own_class`` is the model's own sampler class (what ``default`` names); ``classes``: its family's samplers."""
    unsupported = {name: f"not a sampler of this kind of model, whose samplers are {list(classes)}"
                   for name in SCHEDULER_NAMES if name not in classes}
    if config.get(ZERO_TERMINAL_SNR, False):
        unsupported |= {
            name: f"{cls.__name__} has no zero-terminal-SNR schedule, which this model was trained on"
            for name, cls in classes.items()
            # (not `in cls.from_config(config).config`: diffusers keeps keys a class ignores in its config)
            if cls is not None and ZERO_TERMINAL_SNR not in inspect.signature(cls.__init__).parameters
        }
    if device is not None and device.type == "cuda":
        for name, cls in classes.items():
            if cls in SYNCING_ON_CUDA:
                unsupported.setdefault(name, SYNCING_ON_CUDA[cls])
        if own_class in SYNCING_ON_CUDA:
            unsupported["default"] = f"the model's own sampler is {own_class.__name__}: {SYNCING_ON_CUDA[own_class]}"
    return unsupported


class SchedulerFactory:
    """Makes fresh scheduler copies for one model, configured from that model's own scheduler config."""

    def __init__(
        self, base: SchedulerMixin, config_fixes: dict[str, object] | None = None, device: torch.device | None = None,
        classes: dict[str, type[SchedulerMixin] | None] = SCHEDULER_CLASSES,
    ) -> None:
        """``config_fixes``: config values the model's pipeline forces on any scheduler given to it (SD1.x's
        pipeline turns off DDIM's ``clip_sample``), so a sampler made here behaves as it would in the pipeline.
        ``device``: where the model runs (samplers that would sync the step loop are refused on CUDA).
        ``classes``: the samplers of the model's family, by name."""
        self._base = base
        self._classes = classes
        self._fixes = config_fixes or {}
        self._templates: dict[str, SchedulerMixin] = {}
        self._lock = threading.Lock()
        self.unsupported = unsupported_samplers(base.config, device, type(base), classes)
        """Sampler name -> why this model cannot use it; requests naming one are refused."""

    @property
    def names(self) -> tuple[str, ...]:
        """The sampler names this model can use."""
        return tuple(name for name in SCHEDULER_NAMES if name not in self.unsupported)

    def max_steps(self, name: str) -> int | None:
        """The most steps sampler ``name`` can take, where it has its own limit: LCM's schedule is a subset of
        the ``original_inference_steps`` (50) the model was distilled on, and diffusers refuses more."""
        template = self.template(name)
        if isinstance(template, LCMScheduler):
            return int(template.config.original_inference_steps)
        return None

    def template(self, name: str) -> SchedulerMixin:
        """The shared, never-stepped template for ``name``. Do not step it: use :meth:`new`."""
        with self._lock:
            if name not in self._templates:
                cls = self._classes[name]
                if cls is None:
                    self._templates[name] = copy.deepcopy(self._base)
                else:
                    # diffusers warns that the keys this class lacks "will be ignored": that is what making one
                    # sampler from another's config means
                    with muted("diffusers.configuration_utils"):
                        template = cls.from_config(self._base.config)
                        fixes = {key: value for key, value in self._fixes.items() if key in template.config}
                        if fixes:
                            template = cls.from_config(template.config, **fixes)
                    self._templates[name] = template
            return self._templates[name]

    def new(self, name: str) -> SchedulerMixin:
        """A private copy for one request."""
        return copy.deepcopy(self.template(name))
