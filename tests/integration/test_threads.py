"""On a CPU only the denoiser's worker runs a multi-threaded intra-op pool (see StageConfig.cpu_threads), and it
decodes too (EngineConfig.decode_in_denoiser), so no two OpenMP pools compete for the cores."""

import threading

import pytest
import torch

from baton import Engine


@pytest.mark.parametrize(
    ("decode_in_denoiser", "decoder_thread"), [(None, "baton-denoise"), (False, "baton-vae_decode")]
)
def test_each_stage_runs_with_its_configured_cpu_threads(decode_in_denoiser, decoder_thread):
    default = torch.get_num_threads()
    seen = {}
    with Engine(models="tiny-sd15", device="cpu", decode_in_denoiser=decode_in_denoiser) as engine:
        pipeline = engine.runners["tiny-sd15"].pipeline
        for name, module in (("text_encode", pipeline.text_encoder), ("denoise", pipeline.unet),
                             ("vae_decode", pipeline.vae.decoder)):
            module.register_forward_pre_hook(
                lambda *_, name=name: seen.__setitem__(name, (threading.current_thread().name,
                                                              torch.get_num_threads()))
            )
        result = engine.generate(prompt="a fox", width=64, height=64, steps=2)
    decoder_threads = default if decoder_thread == "baton-denoise" else 1
    assert seen == {
        "text_encode": ("baton-text_encode", 1),
        "denoise": ("baton-denoise", default),
        "vae_decode": (decoder_thread, decoder_threads),
    }
    assert result.timings["vae_decode"].run_s > 0  # decoded on either thread, its timing is recorded
    assert torch.get_num_threads() == default  # the caller's own thread is left as it was
