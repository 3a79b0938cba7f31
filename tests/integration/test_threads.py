"""On a CPU only one thread runs a multi-threaded intra-op pool: the denoiser's, which by default also encodes and
decodes (EngineConfig.fused_stages), so no two OpenMP pools compete for the cores."""

import threading

import pytest
import torch

from baton import Engine


@pytest.mark.parametrize("fused", [None, False])
def test_each_model_runs_on_the_expected_thread_with_its_cpu_threads(fused):
    default = torch.get_num_threads()
    seen = {}
    with Engine(models="tiny-sd15", device="cpu", fused_stages=fused) as engine:
        pipeline = engine.runners["tiny-sd15"].pipeline
        for name, module in (("text_encode", pipeline.text_encoder), ("denoise", pipeline.unet),
                             ("vae_decode", pipeline.vae.decoder)):
            module.register_forward_pre_hook(
                lambda *_, name=name: seen.__setitem__(name, (threading.current_thread().name,
                                                              torch.get_num_threads()))
            )
        result = engine.generate(prompt="a fox", width=64, height=64, steps=2)
    if fused is None:  # the CPU default: everything on the denoiser's thread and pool
        expected = {stage: ("baton-denoise", default) for stage in ("text_encode", "denoise", "vae_decode")}
    else:
        expected = {"text_encode": ("baton-text_encode", 1), "denoise": ("baton-denoise", default),
                    "vae_decode": ("baton-vae_decode", 1)}
    assert seen == expected
    assert list(result.timings) == ["text_encode", "denoise", "vae_decode", "image_encode"]
    assert all(result.timings[stage].run_s > 0 for stage in ("text_encode", "vae_decode"))
    assert torch.get_num_threads() == default  # the caller's own thread is left as it was


def test_the_engine_shortens_the_gil_switch_interval_while_any_engine_runs():
    import sys

    before = sys.getswitchinterval()  # another test's engine may hold a shorter one already
    first = Engine(models="tiny-sd15", device="cpu", gil_switch_interval_s=0.0007)
    assert sys.getswitchinterval() == pytest.approx(min(before, 0.0007))
    second = Engine(models="tiny-sd15", device="cpu", gil_switch_interval_s=0.0009)
    first.close()
    assert sys.getswitchinterval() == pytest.approx(min(before, 0.0009))  # the second still runs
    second.close()
    second.close()  # closing twice releases once
    assert sys.getswitchinterval() == pytest.approx(before)


def test_describe_reports_the_scheduling_and_placement_choices():
    with Engine(models="tiny-sd15", device="cpu") as engine:
        described = engine.describe()
    assert described["denoise"]["batching"] == "step" and described["denoise"]["max_rows"] == 16
    assert described["fused_stages"] is True  # the CPU default
    assert described["models"][0]["batch_invariant"] is True
