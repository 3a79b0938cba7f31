"""The benches' flags without running them: presets and optimization flags, `--profile gpu`, `--only`, the new
report columns (fed hand-made reports), the probe's denoiser wrapper, and the TF32 record."""

from __future__ import annotations

from dataclasses import asdict

import pytest
import torch

from baton.bench.cli import optimization_settings, serve_settings
from baton.bench.machine import describe_machine, strict_float32
from baton.bench.optimizations import OptimizationSettings, table_rows
from baton.bench.optimizations_report import optimizations_markdown
from baton.bench.report import options_summary, serve_markdown
from baton.bench.serve import GPU_PROFILE, ServeSettings, add_ratios, summarize
from baton.cli import _parser
from baton.config import OptimizationConfig


def parse(*argv: str):
    return _parser().parse_args(["bench", *argv])


# -- bench serve: presets and flags ----------------------------------------------------------------------------------
def test_preset_and_flags_shape_the_staged_modes_only():
    settings = serve_settings(parse("serve", "--preset", "fast", "--vae-slicing", "--device", "cpu"))
    options = settings.optimizations
    assert options.preset == "fast" and options.fuse_qkv and options.vae_slicing  # the preset, then the flag
    assert options.prompt_cache.max_bytes == 256 * 2**20 and not options.compile.enabled  # fast on a CPU
    for mode in ("staged", "staged-step"):
        assert settings.engine_config(mode).optimizations == options
    stacked = settings.engine_config("stacked")
    assert stacked.mode == "stacked" and stacked.optimizations == OptimizationConfig()
    assert settings.engine_config("staged").denoise.batching == "request"
    assert settings.engine_config("staged-step").denoise.batching == "step"


def test_a_preset_sets_max_rows_unless_the_flag_does():
    assert serve_settings(parse("serve", "--preset", "max-throughput", "--device", "cpu")).max_rows == 32
    explicit = parse("serve", "--preset", "max-throughput", "--max-rows", "8", "--device", "cpu")
    assert serve_settings(explicit).max_rows == 8
    assert serve_settings(parse("serve", "--device", "cpu")).max_rows == 16


def test_options_without_a_staged_mode_are_refused():
    with pytest.raises(ValueError, match="`--preset` and the optimization flags apply to the staged modes"):
        serve_settings(parse("serve", "--modes", "stacked,batched-ceiling", "--fuse-qkv", "--device", "cpu"))
    with pytest.raises(ValueError, match="`--busy-method` must be one of"):
        ServeSettings(busy_method="events")


# -- --profile gpu ---------------------------------------------------------------------------------------------------
def test_serve_gpu_profile_sets_defaults_and_flags_override_them():
    plain = serve_settings(parse("serve", "--device", "cpu"))
    assert (plain.model, plain.width, plain.steps, plain.requests, plain.timeline) == ("tiny-sd15", 128, 20, 32, True)
    assert plain.profile is None and plain.concurrency == (1, 2, 4, 8)
    gpu = serve_settings(parse("serve", "--profile", "gpu", "--device", "cpu"))
    assert (gpu.model, (gpu.width, gpu.height), gpu.dtype, gpu.steps) == ("sd15-random", (512, 512), "float16", 25)
    assert gpu.modes == ("stacked", "staged-step", "batched-ceiling") and gpu.concurrency == (1, 8)
    assert gpu.requests == 16 and gpu.timeline is False and gpu.profile == "gpu" and gpu.warmup is None
    assert gpu.modes == GPU_PROFILE["modes"]
    mine = serve_settings(parse("serve", "--profile", "gpu", "--steps", "5", "--modes", "stacked", "--timeline",
                                "--size", "256x256", "--device", "cpu"))
    assert (mine.steps, mine.modes, mine.timeline, mine.width) == (5, ("stacked",), True, 256)
    assert mine.model == "sd15-random" and mine.requests == 16  # the rest still from the profile


def test_optimizations_gpu_profile_sets_defaults_and_flags_override_them():
    plain = optimization_settings(parse("optimizations", "--device", "cpu"))
    assert (plain.model, plain.images, plain.steps, plain.iterations, plain.only) == ("tiny-sdxl", 4, 50, 3, ())
    gpu = optimization_settings(parse("optimizations", "--profile", "gpu", "--half", "float16", "--device", "cpu"))
    assert (gpu.model, gpu.width, gpu.height, gpu.images, gpu.steps, gpu.iterations) == (
        "sdxl-random", 1024, 1024, 1, 30, 2)
    assert [row.name for row in table_rows(gpu, "cuda")] == [
        "fp32, classic attention", "diffusers fp16 + SDPA (stacked)", "fp16 + SDPA"]
    mine = optimization_settings(parse("optimizations", "--profile", "gpu", "--steps", "4", "--only",
                                       "fp16 + SDPA + compile,fp16 + SDPA + compile (restart, warm cache)",
                                       "--half", "float16", "--device", "cpu"))
    assert mine.steps == 4 and mine.model == "sdxl-random"
    assert [row.name for row in table_rows(mine, "cuda")] == [
        "fp32, classic attention", "fp16 + SDPA + compile", "fp16 + SDPA + compile (restart, warm cache)"]


# -- --only: exact names ---------------------------------------------------------------------------------------------
def only(text: str, device_type: str = "cuda") -> list[str]:
    tokens = tuple(part.strip() for part in text.split(","))  # as the CLI splits it
    return [row.name for row in table_rows(OptimizationSettings(only=tokens), device_type)]


def test_only_selects_exact_names_even_with_commas_in_them():
    assert only("fp16, classic attention,diffusers fp32, classic attention (stacked),preset fast") == [
        "fp32, classic attention", "diffusers fp32, classic attention (stacked)", "fp16, classic attention",
        "preset fast"]
    assert only("fp32, classic attention") == ["fp32, classic attention"]  # the reference alone
    assert only("fp16 + SDPA") == ["fp32, classic attention", "fp16 + SDPA"]  # not every row holding "+ SDPA"


def test_an_unknown_only_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"`--only` names no row \['stacked'\]") as error:
        only("stacked")
    assert "  fp16 + SDPA + compile (restart, warm cache)\n" in str(error.value)
    with pytest.raises(ValueError, match="fp16 \\+ SDPA"):
        only("bf16 + SDPA", "cuda")  # the CUDA rows are fp16


# -- the report's new columns ----------------------------------------------------------------------------------------
def measured(cuda: bool, kernel_s: float | None = 0.8):
    memory = ({"peak_allocated_gb": 3.1, "peak_reserved_gb": 3.5, "device_free_gb": 120.0, "device_total_gb": 139.0,
               "peak_rss_gb": 2.0} if cuda else {"peak_allocated_gb": None, "peak_reserved_gb": None,
                                                  "device_free_gb": None, "device_total_gb": None, "peak_rss_gb": 0.4})
    return {
        "device_type": "cuda" if cuda else "cpu", "requests": 4, "errors": [], "images": 4, "duration_s": 1.0,
        "latencies_s": [0.5] * 4, "forwards": 10, "rows": 40, "busy_s": 0.95,
        "queue_wait_s": {"denoise": [0.001] * 4}, "run_s": {"denoise": [0.4] * 4}, "memory": memory,
        "busy_pass": None if kernel_s is None else {"requests": 8, "images": 8, "wall_s": 1.0, "kernel_s": kernel_s,
                                                     "ranges": 20, "images_per_s": 8.0},
    }


def serve_report(cuda: bool, rows: list[dict], optimizations: OptimizationConfig) -> dict:
    add_ratios(rows)
    machine = {"device": "cuda" if cuda else "cpu", "cpu": "test cpu", "cpu_cores": 16, "torch": "x", "diffusers": "y",
               "created": "now", "command": "baton bench serve",
               "tf32": {"matmul": False, "cudnn": True, "float32_matmul_precision": "highest"}}
    if cuda:
        machine["gpu"] = "NVIDIA H200"
    settings = asdict(ServeSettings(concurrency=(8,), optimizations=optimizations, profile="gpu"))
    return {"benchmark": "serve", "machine": machine, "settings": settings, "results": rows, "timeline": {}}


def test_busy_is_kernel_time_over_the_profiled_pass_with_a_fallback_to_spans():
    row = summarize("staged-step", "closed", 8, [measured(True)])
    assert row["denoiser_busy"] == 0.8 and row["denoiser_busy_method"] == "cuda-kernels"
    assert row["denoiser_busy_spans"] == 0.95 and row["busy_pass"]["requests"] == 8
    assert (row["peak_allocated_gb"], row["peak_reserved_gb"], row["device_free_gb"]) == (3.1, 3.5, 120.0)
    none = summarize("staged-step", "closed", 8, [measured(True, kernel_s=0.0)])
    assert none["denoiser_busy"] == 0.95 and none["denoiser_busy_method"].startswith("cuda-event-spans (")
    cpu = summarize("stacked", "closed", 8, [measured(False, kernel_s=None)])
    assert cpu["denoiser_busy_method"] == "cpu-spans" and cpu["busy_pass"] is None and cpu["peak_rss_gb"] == 0.4


def test_serve_markdown_shows_memory_busy_method_and_options_on_cuda():
    rows = [summarize(mode, "closed", 8, [measured(True)]) for mode in ("stacked", "staged-step")]
    table = serve_markdown(serve_report(True, rows, OptimizationConfig(preset="fast", fuse_qkv=True)))
    assert "| peak alloc GB | peak reserved GB | free / total GB | failed |" in table
    assert "| 80% | – / 1.0 / – | 3.10 | 3.50 | 120.0 / 139.0 | 0 |" in table
    assert "Denoiser busy (cuda-kernels): GPU kernel time" in table
    assert "preset `fast`: fuse_qkv True" in table and "`--profile gpu`" in table
    assert "TF32: matmul off, cuDNN on" in table


def test_serve_markdown_shows_peak_rss_on_a_cpu():
    rows = [summarize("stacked", "closed", 8, [measured(False, kernel_s=None)])]
    table = serve_markdown(serve_report(False, rows, OptimizationConfig()))
    assert "| peak RSS GB | failed |" in table and "| 0.40 | 0 |" in table and "Denoiser busy (cpu-spans)" in table
    assert "the engine's defaults" in table and "TF32" not in table


def test_options_summary_names_what_differs_from_the_defaults():
    assert options_summary(asdict(OptimizationConfig())) == "no preset (the engine's defaults)"
    from baton.optim.presets import preset_config

    fast = asdict(preset_config("fast", "cpu").optimizations)
    assert options_summary(fast) == "preset `fast`: fuse_qkv True, prompt_cache.max_bytes 256 MiB"


def optimizations_row(config, kind, cuda: bool, **extra):
    memory = ({"peak_allocated_gb": 9.5, "peak_reserved_gb": 11.0, "device_free_gb": 125.0, "device_total_gb": 143.8}
              if cuda else {"peak_allocated_gb": None, "peak_reserved_gb": None, "device_free_gb": None,
                            "device_total_gb": None})
    return {"config": config, "kind": kind, "status": "ok", "latency_s": 2.0, "median_latency_s": 2.0,
            "vs_fp32": 1.0, "vs_stacked_sdpa": None, "peak_memory_gb": 9.5, "psnr_db": None, "max_abs_diff": 0.0,
            "ready_s": 30.0, "unet_s": 1.75, "vae_decode_s": 0.125, "component_clock": "cuda-events" if cuda else
            "cpu-wall", "memory_measure": "x", "peak_rss_gb": 3.0, **memory, **extra}


def optimizations_report(cuda: bool, rows: list[dict]) -> dict:
    machine = {"device": "cuda" if cuda else "cpu", "cpu": "test cpu", "cpu_cores": 16, "torch": "x",
               "diffusers": "y", "created": "now", "command": "baton bench optimizations"}
    settings = {**asdict(OptimizationSettings(width=1024, height=1024, profile="gpu")), "lossless_presets": [],
                "lossless_psnr_db": 35.0}
    return {"benchmark": "optimizations", "machine": machine, "settings": settings, "results": rows}


def test_optimizations_markdown_shows_component_times_memory_and_tf32():
    rows = [optimizations_row("fp32, classic attention", "reference", True,
                              tf32={"matmul": False, "cudnn": False, "float32_matmul_precision": "highest"}),
            optimizations_row("fp16 + SDPA", "option", True,
                              tf32={"matmul": False, "cudnn": True, "float32_matmul_precision": "highest"})]
    table = optimizations_markdown(optimizations_report(True, rows))
    assert "| UNet s | VAE decode s | peak alloc GB | peak reserved GB | free / total GB |" in table
    assert "| 1.750 | 0.125 | 9.50 | 11.00 | 125.0 / 143.8 | reference |" in table
    assert table.splitlines()[6].endswith("| 30.0 | off |") and table.splitlines()[7].endswith("| cuDNN |")
    assert "CUDA event time" in table and "`--profile gpu`" in table
    cpu = optimizations_markdown(optimizations_report(False, [optimizations_row("fp32, classic attention",
                                                                                 "reference", False)]))
    assert "| UNet s | VAE decode s | peak RSS GB | PSNR dB |" in cpu and "| 1.750 | 0.125 | 3.00 | reference |" in cpu


# -- TF32 and the probe ----------------------------------------------------------------------------------------------
def test_the_machine_records_the_tf32_switches():
    tf32 = describe_machine("cpu")["tf32"]
    assert set(tf32) == {"matmul", "cudnn", "float32_matmul_precision"} and isinstance(tf32["cudnn"], bool)
    before = torch.backends.cudnn.allow_tf32
    assert strict_float32(torch.float32, torch.device("cpu")) is False and torch.backends.cudnn.allow_tf32 == before


def test_the_probe_logs_each_denoiser_forward_once_and_labels_it_for_the_profiler():
    from baton.bench.probe import ComponentProbe, profiled_pass
    from baton.models import load_model
    from baton.models.types import Conditioning

    runner = load_model("tiny-sd15", torch.device("cpu"), torch.float32)
    latents = torch.zeros(2, runner.latent_channels, 8, 8)
    hidden = torch.zeros(2, 77, runner.pipeline.unet.config.cross_attention_dim)
    timesteps = torch.tensor([10.0, 10.0])
    original = runner.denoiser
    with torch.inference_mode(), ComponentProbe(runner) as probe:
        runner.denoiser(latents, timesteps, Conditioning(hidden))  # baton: the wrapper, the UNet hook inside it
        runner.pipeline.unet(latents, timesteps, encoder_hidden_states=hidden)  # the plain pipeline's path
        assert [(span.component, span.rows) for span in probe.take()] == [("denoise", 2), ("denoise", 2)]
        with profiled_pass(probe, torch.device("cpu")) as kernels:
            runner.denoiser(latents, timesteps, Conditioning(hidden))
        assert kernels["ranges"] == 1 and kernels["kernel_s"] > 0 and not probe.label_denoiser
    assert runner.denoiser == original  # unwrapped on exit


class FakeKinetoEvent:
    """The few accessors of a kineto event that the busy figure reads."""

    def __init__(self, name, kind, correlation=0, linked=0, thread=1, start=0, end=0):
        self._values = (name, kind, correlation, linked, thread, start, end)

    def name(self): return self._values[0]  # noqa: E704
    def activity_type(self): return self._values[1]  # noqa: E704
    def correlation_id(self): return self._values[2]  # noqa: E704
    def linked_correlation_id(self): return self._values[3]  # noqa: E704
    def start_thread_id(self): return self._values[4]  # noqa: E704
    def start_ns(self): return self._values[5]  # noqa: E704
    def end_ns(self): return self._values[6]  # noqa: E704
    def duration_ns(self): return self._values[6] - self._values[5]  # noqa: E704

    def device_type(self):
        return torch.autograd.DeviceType.CPU if self._values[1] in ("cpu_op", "user_annotation", "cuda_runtime") \
            else torch.autograd.DeviceType.CUDA


def test_kernel_time_counts_the_gpu_work_launched_inside_the_denoiser_ranges_only():
    from baton.bench.probe import DENOISE_LABEL, denoiser_kernel_s_raw

    ms = 1_000_000
    events = [
        FakeKinetoEvent(DENOISE_LABEL, "user_annotation", correlation=1, thread=7, start=0, end=10 * ms),
        FakeKinetoEvent("aten::mm", "cpu_op", correlation=2, thread=7, start=1 * ms, end=2 * ms),
        FakeKinetoEvent("aten::add", "cpu_op", correlation=3, thread=7, start=20 * ms, end=21 * ms),  # after it
        FakeKinetoEvent("aten::conv", "cpu_op", correlation=4, thread=8, start=5 * ms, end=6 * ms),  # other thread
        FakeKinetoEvent("cudaLaunchKernel", "cuda_runtime", linked=2, thread=7, start=1 * ms, end=2 * ms),
        FakeKinetoEvent("gemm", "kernel", linked=2, start=3 * ms, end=7 * ms),  # 4 ms: counted
        FakeKinetoEvent("graph node", "kernel", linked=1, start=8 * ms, end=9 * ms),  # a graph replay: counted
        FakeKinetoEvent("Memcpy HtoD", "gpu_memcpy", linked=2, start=9 * ms, end=9 * ms + ms // 2),  # counted
        FakeKinetoEvent("add", "kernel", linked=3, start=22 * ms, end=30 * ms),  # outside: not counted
        FakeKinetoEvent("conv", "kernel", linked=4, start=10 * ms, end=20 * ms),  # other thread: not counted
        FakeKinetoEvent(DENOISE_LABEL, "gpu_user_annotation", linked=1, start=3 * ms, end=15 * ms),  # gaps: no
    ]
    assert denoiser_kernel_s_raw(events, cuda=True) == (pytest.approx(0.0055), 1)
    assert denoiser_kernel_s_raw(events, cuda=False) == (pytest.approx(0.010), 1)  # a CPU: the range's time
