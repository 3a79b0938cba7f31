"""Which samplers a model can use: a model trained on a zero-terminal-SNR schedule refuses those that lack it."""

from __future__ import annotations

import pytest
from diffusers import DDIMScheduler, PNDMScheduler

from baton.models.builtin import SD15_SCHEDULER
from baton.models.schedulers import SCHEDULER_NAMES, SchedulerFactory

ZERO_SNR = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", rescale_betas_zero_snr=True,
                prediction_type="v_prediction", timestep_spacing="trailing", clip_sample=False)


def test_a_zero_terminal_snr_model_refuses_the_samplers_that_would_drop_its_schedule():
    factory = SchedulerFactory(DDIMScheduler(**ZERO_SNR))
    assert set(factory.unsupported) == {"pndm", "heun"}
    assert "PNDMScheduler has no zero-terminal-SNR schedule" in factory.unsupported["pndm"]
    assert factory.names == ("default", "euler", "euler_a", "ddim", "dpmpp_2m", "unipc")


@pytest.mark.parametrize("name", ["default", "euler", "euler_a", "ddim", "dpmpp_2m", "unipc"])
def test_every_sampler_it_keeps_starts_from_pure_noise_and_predicts_v(name):
    sampler = SchedulerFactory(DDIMScheduler(**ZERO_SNR)).new(name)
    assert sampler.config.prediction_type == "v_prediction" and sampler.config.timestep_spacing == "trailing"
    assert float(sampler.alphas_cumprod[-1]) < 1e-6  # the last training step holds no signal
    sampler.set_timesteps(10)
    assert int(sampler.timesteps[0]) == 999


def test_an_ordinary_schedule_can_use_every_sampler():
    factory = SchedulerFactory(PNDMScheduler(**SD15_SCHEDULER))
    assert factory.unsupported == {} and factory.names == SCHEDULER_NAMES
