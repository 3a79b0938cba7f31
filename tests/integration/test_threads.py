"""On a CPU only the denoiser's worker runs a multi-threaded intra-op pool (see StageConfig.cpu_threads)."""

import torch

from baton import Engine


def test_each_stage_runs_with_its_configured_cpu_threads():
    default = torch.get_num_threads()
    seen = {}
    with Engine(models="tiny-sd15", device="cpu") as engine:
        pipeline = engine.runners["tiny-sd15"].pipeline
        for name, module in (("text_encode", pipeline.text_encoder), ("denoise", pipeline.unet),
                             ("vae_decode", pipeline.vae.decoder)):
            module.register_forward_pre_hook(lambda *_, name=name: seen.__setitem__(name, torch.get_num_threads()))
        engine.generate(prompt="a fox", width=64, height=64, steps=2)
    assert seen == {"text_encode": 1, "denoise": default, "vae_decode": 1}
    assert torch.get_num_threads() == default  # the caller's own thread is left as it was
