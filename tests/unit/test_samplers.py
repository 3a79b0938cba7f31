"""Which samplers a model can use: a model trained on a zero-terminal-SNR schedule refuses those that lack it."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler, LCMScheduler, PNDMScheduler, UniPCMultistepScheduler

from baton.models.builtin import LCM_SCHEDULER, SD15_SCHEDULER
from baton.models.schedulers import SCHEDULER_NAMES, SchedulerFactory

ZERO_SNR = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", rescale_betas_zero_snr=True,
                prediction_type="v_prediction", timestep_spacing="trailing", clip_sample=False)


def test_a_zero_terminal_snr_model_refuses_the_samplers_that_would_drop_its_schedule():
    factory = SchedulerFactory(DDIMScheduler(**ZERO_SNR))
    assert set(factory.unsupported) == {"pndm", "heun"}
    assert "PNDMScheduler has no zero-terminal-SNR schedule" in factory.unsupported["pndm"]
    assert factory.names == ("default", "euler", "euler_a", "ddim", "dpmpp_2m", "unipc", "lcm")


@pytest.mark.parametrize("name", ["default", "euler", "euler_a", "ddim", "dpmpp_2m", "unipc", "lcm"])
def test_every_sampler_it_keeps_starts_from_pure_noise_and_predicts_v(name):
    sampler = SchedulerFactory(DDIMScheduler(**ZERO_SNR)).new(name)
    assert sampler.config.prediction_type == "v_prediction" and sampler.config.timestep_spacing == "trailing"
    assert float(sampler.alphas_cumprod[-1]) < 1e-6  # the last training step holds no signal
    sampler.set_timesteps(10)
    assert int(sampler.timesteps[0]) == 999


def test_an_ordinary_schedule_can_use_every_sampler():
    factory = SchedulerFactory(PNDMScheduler(**SD15_SCHEDULER))
    assert factory.unsupported == {} and factory.names == SCHEDULER_NAMES


def test_on_cuda_the_samplers_that_sync_every_step_are_refused_with_the_reason():
    factory = SchedulerFactory(PNDMScheduler(**SD15_SCHEDULER), device=torch.device("cuda"))
    assert set(factory.unsupported) == {"unipc"}
    assert "blocking copies" in factory.unsupported["unipc"] and "dpmpp_2m" in factory.unsupported["unipc"]
    own = SchedulerFactory(UniPCMultistepScheduler.from_config(SD15_SCHEDULER), device=torch.device("cuda"))
    assert set(own.unsupported) == {"unipc", "default"}  # a model whose own sampler is UniPC
    assert SchedulerFactory(PNDMScheduler(**SD15_SCHEDULER), device=torch.device("cpu")).unsupported == {}


def test_lcm_has_its_own_step_limit():
    factory = SchedulerFactory(PNDMScheduler(**SD15_SCHEDULER))
    assert factory.max_steps("lcm") == 50 and factory.max_steps("euler") is None
    assert SchedulerFactory(LCMScheduler(**LCM_SCHEDULER)).max_steps("default") == 50
