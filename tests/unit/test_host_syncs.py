"""No host syncs in the step loop, for every sampler: admission and every step run on the ``meta`` device under a
guard that flags anything that would make the host wait for a GPU (``baton.bench.syncs``)."""

import pytest
import torch
from diffusers.utils.torch_utils import randn_tensor

from baton.bench.syncs import HostSyncGuard, step_loop_syncs
from baton.models.schedulers import SCHEDULER_CLASSES, SCHEDULER_NAMES, SYNCING_ON_CUDA

ON_CUDA = tuple(name for name in SCHEDULER_NAMES if SCHEDULER_CLASSES[name] not in SYNCING_ON_CUDA)


@pytest.mark.parametrize("model", ["tiny-sd15", "tiny-sdxl", "tiny-lcm", "tiny-sdxl-lcm"])
def test_the_step_loop_never_syncs_for_any_sampler_baton_serves_on_cuda(model):
    """Every sampler in one batch, 4 steps each: initial latents, conditioning, timesteps, step noise."""
    syncs, failures = step_loop_syncs(model, samplers=ON_CUDA, steps=4)
    assert failures == {}
    assert syncs == [], "\n".join(f"{s.kind} at {s.where} ({s.baton_frame}): {s.detail}" for s in syncs)


@pytest.mark.parametrize("model", ["tiny-sd3", "tiny-flux", "tiny-flux-schnell"])
def test_the_transformer_families_step_loops_never_sync_either(model):
    """SD3 and Flux (flow matching: mu and sigmas from the size, Flux's packed noise, position ids, the guidance
    embedding per row), every sampler each serves, one batch. (PixArt-Σ cannot run here: transformers reads its
    T5 padding mask back while encoding, which fails on meta tensors; that read is the text encoder's, before the
    step loop, and its samplers are the UNets', covered above.)"""
    syncs, failures = step_loop_syncs(model, steps=4)
    assert failures == {}
    assert syncs == [], "\n".join(f"{s.kind} at {s.where} ({s.baton_frame}): {s.detail}" for s in syncs)


def test_unipc_syncs_at_every_step_which_is_why_cuda_refuses_it():
    syncs, failures = step_loop_syncs("tiny-sd15", samplers=("unipc",), steps=3)
    assert failures == {} and syncs and all(s.in_step_loop for s in syncs)
    assert {s.kind for s in syncs} == {"blocking copy", "read"}
    assert all("scheduling_unipc_multistep.py" in s.where for s in syncs)


def test_the_guard_fails_when_a_blocking_noise_copy_is_put_back(monkeypatch):
    """diffusers' own randn_tensor (a host draw, then a blocking .to(device)) for the initial latents and for
    Euler-ancestral's step noise: both places are reported, with baton's frame that called them."""
    def blocking(shape, generator, device, dtype):
        return randn_tensor(shape, generator=generator, device=device, dtype=dtype)

    monkeypatch.setattr("baton.models.runner.draw_noise", blocking)
    monkeypatch.setattr("baton.models.noise.draw_noise", blocking)
    syncs, _ = step_loop_syncs("tiny-sd15", samplers=("euler_a",), steps=3)
    assert {s.kind for s in syncs} == {"blocking copy"}
    frames = {s.baton_frame.split(":")[0] for s in syncs}
    assert frames == {"baton/models/runner.py", "baton/models/noise.py"}
    assert len(syncs) == 1 + 3  # the initial latents, then Euler-ancestral's noise at each of the 3 steps
    assert all(s.in_step_loop and "torch_utils.py" in s.where for s in syncs)


def test_the_guard_fails_when_a_read_back_is_put_back(monkeypatch):
    from baton.models.runner import ModelRunner

    predict = ModelRunner.predict

    def with_a_nan_check(self, *args, **kwargs):  # a host-side check of every prediction: a read per forward
        noise = predict(self, *args, **kwargs)
        if torch.isnan(noise).any():
            raise FloatingPointError("NaN in the prediction")
        return noise

    monkeypatch.setattr(ModelRunner, "predict", with_a_nan_check)
    syncs, failures = step_loop_syncs("tiny-sd15", samplers=("euler",), steps=2)
    assert [s.kind for s in syncs] == ["read"] and "reads a device value" in syncs[0].detail
    assert syncs[0].where.startswith("tests/unit/test_host_syncs.py") and syncs[0].in_step_loop
    assert set(failures) == {"euler"}  # on meta the read fails the request outright, too


def test_the_guard_checks_copies_by_blocking_and_by_direction():
    guard = HostSyncGuard("meta")
    on_device = torch.zeros(2, device="meta")
    with guard:
        torch.ones(2).to("meta", non_blocking=True)  # fine (no CUDA here to pin with)
        on_device * torch.tensor(2.0)  # a host scalar operand is passed by value: no copy
        torch.ones(2).to("meta")
        on_device.new_empty(2).copy_(torch.ones(2))
    assert [s.kind for s in guard.syncs] == ["blocking copy", "blocking copy"]
    assert all(s.where.startswith("tests/unit/test_host_syncs.py") for s in guard.syncs)
