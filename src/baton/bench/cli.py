"""``baton bench ...`` argument parsing and output, kept apart from the main CLI."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from baton.config import DTYPE_NAMES
from baton.optim.cli_args import add_optimization_args, config_from_args

RESULTS_DIR = Path("benchmarks/results")
PROFILES: tuple[str, ...] = ("gpu",)

# The defaults of the flags a `--profile` may set. They are `None` in the parsers, so that a flag given on the
# command line always wins over the profile, and the profile over these.
SERVE_DEFAULTS: dict[str, Any] = {
    "model": "tiny-sd15", "modes": ("stacked", "staged", "staged-step", "batched-ceiling"), "concurrency": (1, 2, 4, 8),
    "requests": 32, "steps": 20, "size": (128, 128), "dtype": "auto", "timeline": True,
}
OPTIMIZATIONS_DEFAULTS: dict[str, Any] = {
    "model": "tiny-sdxl", "images": 4, "steps": 50, "size": None, "iterations": 3, "only": (),
}


def add_bench_parser(commands: argparse._SubParsersAction, size_type) -> None:
    bench = commands.add_parser("bench", help="benchmarks that compare baton with the plain diffusers pipeline")
    benches = bench.add_subparsers(dest="bench", required=True)

    serve = benches.add_parser(
        "serve",
        help="stacked vs staged vs step-batched vs the batched ceiling, under C concurrent clients",
        description="Drive the engine with C concurrent clients in a closed loop (or Poisson arrivals with "
        "--rate) in every mode, in one run, and report images/s, latency percentiles and what the denoiser did.",
    )
    serve.add_argument("--profile", choices=PROFILES, default=None,
                       help="defaults for a short GPU window: sd15-random 512x512 float16, 25 steps, modes "
                            "stacked,staged-step,batched-ceiling, concurrency 1,8, 16 requests, no timeline "
                            "(flags given override each)")
    serve.add_argument("--model", default=None, help="built-in name, folder or hub id (default: tiny-sd15)")
    serve.add_argument("--modes", type=_names, default=None,
                       help="comma-separated: stacked, staged, staged-step, batched-ceiling (default: all)")
    serve.add_argument("--concurrency", type=_ints, default=None,
                       help="closed-loop clients (default: 1,2,4,8)")
    serve.add_argument("--rate", type=_floats, default=None,
                       help="Poisson arrival rates in requests/s (replaces the closed loop), e.g. 2,4,8")
    serve.add_argument("--requests", type=int, default=None,
                       help="measured requests per mode and load point (default: 32)")
    serve.add_argument("--rounds", type=int, default=1,
                       help="repeat the whole sweep this many times, interleaved, and pool the rounds")
    serve.add_argument("--warmup", type=int, default=None,
                       help="unmeasured requests before each point (default: one per client, at least 2)")
    serve.add_argument("--steps", type=int, default=None, help="(default: 20)")
    serve.add_argument("--size", type=size_type, default=None, help="WIDTHxHEIGHT (default: 128x128)")
    serve.add_argument("--guidance", type=float, default=None, help="guidance scale (default: the model's)")
    serve.add_argument("--device", default="auto")
    serve.add_argument("--dtype", default=None, choices=DTYPE_NAMES,
                       help="every mode's dtype (default: auto: float16 on CUDA, float32 on a CPU); float32 on "
                            "CUDA runs with TF32 off")
    serve.add_argument("--max-rows", type=int, default=None,
                       help="denoiser rows per forward, 2 per guided image (default: 16, or the preset's)")
    serve.add_argument("--timeline", action=argparse.BooleanOptionalAction, default=None,
                       help="record the two-request timeline (default: on)")
    serve.add_argument("--busy-method", choices=("auto", "spans", "profiler"), default="auto",
                       help="how denoiser_busy is measured: auto: kernel time under torch.profiler in an extra pass "
                            "per load point on CUDA, the forwards' spans on a CPU")
    serve.add_argument("--busy-requests", type=int, default=None,
                       help="requests of the profiled pass (default: one per client, at least 4)")
    serve.add_argument("--out", type=Path, default=None,
                       help="folder for serve.json, serve.md and the charts (default: a new folder in "
                            "benchmarks/results/ unless --json/--markdown/--plot say where)")
    serve.add_argument("--json", type=Path, default=None, help="write the JSON report here")
    serve.add_argument("--markdown", type=Path, default=None, help="write the markdown table here")
    serve.add_argument("--plot", type=Path, default=None, help="write the PNG charts into this folder")
    add_optimization_args(serve)  # the staged modes' options; stacked and batched-ceiling stay plain diffusers
    serve.set_defaults(handler=_serve)

    optimizations = benches.add_parser(
        "optimizations",
        help="latency, peak memory and image drift of each optimization and preset (the SDXL write-up's table)",
        description="Run each optimization configuration and preset in its own process: last-of-N latency, peak "
        "memory, and PSNR against the float32 reference of the same seed.",
    )
    optimizations.add_argument("--profile", choices=PROFILES, default=None,
                               help="defaults for a short GPU window: sdxl-random 1024x1024, 1 image, 30 steps, "
                                    "2 iterations, rows: the reference, diffusers fp16 + SDPA (stacked), fp16 + SDPA "
                                    "(flags given override each)")
    optimizations.add_argument("--model", default=None, help="(default: tiny-sdxl)")
    optimizations.add_argument("--images", type=int, default=None, help="images per generation (default: 4)")
    optimizations.add_argument("--steps", type=int, default=None, help="(default: 50)")
    optimizations.add_argument("--size", type=size_type, default=None, help="WIDTHxHEIGHT (default: the model's)")
    optimizations.add_argument("--iterations", type=int, default=None, help="(default: 3)")
    optimizations.add_argument("--device", default="auto")
    optimizations.add_argument("--half", default="auto", choices=("auto", "float16", "bfloat16"),
                               help="the half precision of the rows (auto: float16 on CUDA, bfloat16 on a CPU)")
    optimizations.add_argument("--only", type=_names, default=None,
                               help="comma-separated exact row names to run (the reference always runs; an unknown "
                                    "name lists the valid ones)")
    optimizations.add_argument("--reference", action=argparse.BooleanOptionalAction, default=True,
                               help="run the float32 reference row the PSNR column compares with (--no-reference: "
                                    "skip it where float32 costs more than the window has, e.g. Flux-dev on a GPU)")
    optimizations.add_argument("--compile-cache", default=None, help="persistent compile cache folder")
    optimizations.add_argument("--out", type=Path, default=None,
                               help="folder for optimizations.json/.md/.png (default: a new folder in "
                                    "benchmarks/results/)")
    optimizations.set_defaults(handler=_optimizations)

    load = benches.add_parser(
        "load",
        help="the HTTP server under overload: capacity, then Poisson arrivals at a multiple of it",
        description="Start `baton serve` per mode on loopback, measure its capacity, then offer --overload times the "
        "staged capacity for --duration seconds; report accepted (200), rejected (429) and failed requests and the "
        "accepted requests' latency.",
    )
    load.add_argument("--model", default="tiny-sd15")
    load.add_argument("--modes", type=_names, default="staged,stacked")
    load.add_argument("--steps", type=int, default=20)
    load.add_argument("--size", type=size_type, default=(128, 128))
    load.add_argument("--max-queue", type=int, default=16)
    load.add_argument("--duration", type=float, default=60.0, help="seconds of open-loop arrivals per mode")
    load.add_argument("--overload", type=float, default=2.0, help="offered load / staged capacity")
    load.add_argument("--capacity-clients", type=int, default=8)
    load.add_argument("--device", default="auto")
    load.add_argument("--out", type=Path, default=None)
    load.set_defaults(handler=_load)

    scale = benches.add_parser(
        "scale",
        help="engine processes behind the router vs one engine: router overhead, throughput per layout, kill -9",
        description="Measure what the router adds per request, the throughput of K engine processes with T threads "
        "each on one device against one engine, and recovery when an engine process is killed under load.",
    )
    scale.add_argument("--model", default="tiny-sd15")
    scale.add_argument("--device", default="cpu", help="the device every engine process shares (cpu, cuda:0)")
    scale.add_argument("--layouts", type=_names, default="in-process,1x1,2x1,1x2",
                       help="comma-separated: in-process, or KxT (K engine processes, T threads each; K alone: the "
                            "router's default threads)")
    scale.add_argument("--concurrency", type=int, default=8, help="closed-loop clients")
    scale.add_argument("--requests", type=int, default=32, help="measured requests per layout and round")
    scale.add_argument("--rounds", type=int, default=3)
    scale.add_argument("--steps", type=int, default=20)
    scale.add_argument("--size", type=size_type, default=(128, 128))
    scale.add_argument("--overhead-pairs", type=int, default=100)
    scale.add_argument("--kill-requests", type=int, default=64)
    scale.add_argument("--out", type=Path, default=None)
    scale.set_defaults(handler=_scale)

    quality = benches.add_parser(
        "quality",
        help="prompt accuracy and drift of every optimization, preset, sampler, step count and guidance scale "
             "(shapes model)",
        description="Draw held-out template captions and free-form prompts with each configuration, each in its own "
        "process; report the detector's accuracy (per attribute, and per free-form style) and PSNR/SSIM against the "
        "float32 reference of the same seed.",
    )
    quality.add_argument("--model", default="shapes", help="a model trained on shapes captions")
    quality.add_argument("--prompts", type=int, default=200, help="held-out prompts per row")
    quality.add_argument("--steps", type=_ints, default="10,20,50",
                         help="step counts measured besides the default, e.g. 10,20,50")
    quality.add_argument("--guidance", type=_floats, default="1,3",
                         help="guidance scales measured besides the model's default, e.g. 1,3 (empty: none)")
    quality.add_argument("--free-form-seeds", type=int, default=4,
                         help="seeds per free-form prompt (0: template prompts only)")
    quality.add_argument("--free-form-prompts", type=int, default=66,
                         help="free-form prompts drawn, spread over the six styles (default: all 66)")
    quality.add_argument("--device", default="auto")
    quality.add_argument("--only", type=_names, default="",
                         help="comma-separated parts of row names to run (the reference always runs)")
    quality.add_argument("--compile-cache", default=None, help="persistent compile cache folder")
    quality.add_argument("--out", type=Path, default=None,
                         help="folder for quality.json/.md/.png (default: a new folder in benchmarks/results/)")
    quality.set_defaults(handler=_quality)


def serve_settings(args: argparse.Namespace):
    """The ``ServeSettings`` of parsed ``bench serve`` arguments: flags given, else the profile's, else defaults;
    the optimization flags become the staged modes' options."""
    from baton.bench.serve import GPU_PROFILE, ServeSettings
    from baton.config import DenoiseConfig
    from baton.device import resolve_device

    apply_profile(args, SERVE_DEFAULTS, {"gpu": GPU_PROFILE})
    config = config_from_args(args, resolve_device(args.device).type, models=(args.model,), device=args.device,
                              dtype=args.dtype, denoise=DenoiseConfig(max_rows=args.max_rows or 16))
    options = config.optimizations
    if options.static_shapes and not options.compile.sizes:
        # compile (or capture) the size benchmarked, not only the model's native one
        options = dataclasses.replace(options, compile=dataclasses.replace(options.compile, sizes=(tuple(args.size),)))
    return ServeSettings(
        model=args.model,
        modes=tuple(args.modes),
        concurrency=tuple(args.concurrency),
        rates=tuple(args.rate or ()),
        requests=args.requests,
        rounds=args.rounds,
        steps=args.steps,
        width=args.size[0],
        height=args.size[1],
        guidance_scale=args.guidance,
        device=args.device,
        dtype=args.dtype,
        max_rows=args.max_rows or config.denoise.max_rows,  # a preset may raise it (max-throughput: 32)
        warmup=args.warmup,
        timeline=args.timeline,
        optimizations=options,
        busy_method=args.busy_method,
        busy_requests=args.busy_requests,
        profile=args.profile,
    )


def optimization_settings(args: argparse.Namespace):
    """The ``OptimizationSettings`` of parsed ``bench optimizations`` arguments (flags, else profile, else
    defaults)."""
    from baton.bench.optimizations import OptimizationSettings, gpu_profile

    apply_profile(args, OPTIMIZATIONS_DEFAULTS, {"gpu": gpu_profile(args.half, args.device)})
    width, height = args.size if args.size else (None, None)
    return OptimizationSettings(
        model=args.model, images=args.images, steps=args.steps, width=width, height=height, device=args.device,
        half=args.half, iterations=args.iterations, only=tuple(args.only), compile_cache=args.compile_cache,
        profile=args.profile, reference=args.reference,
    )


def apply_profile(args: argparse.Namespace, defaults: dict[str, Any], profiles: dict[str, dict[str, Any]]) -> None:
    """Fill each flag of ``defaults`` left unset: from ``args.profile``'s values, else from ``defaults``."""
    profile = profiles[args.profile] if args.profile else {}
    for name, default in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, profile.get(name, default))


def _serve(args: argparse.Namespace) -> int:
    from baton.bench.report import serve_markdown, write_serve_outputs
    from baton.bench.serve import run_serve

    settings = serve_settings(args)
    console = Console()
    out = args.out
    if out is None and args.json is None and args.markdown is None and args.plot is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M")
        out = RESULTS_DIR / f"serve-{args.model.replace('/', '_')}-{args.size[0]}x{args.size[1]}-{stamp}"
    report = run_serve(settings, log=lambda line: console.print(line, highlight=False))
    paths = write_serve_outputs(
        report,
        json_path=args.json or (out / "serve.json" if out else None),
        markdown_path=args.markdown or (out / "serve.md" if out else None),
        plot_dir=args.plot or out,
    )
    print(serve_markdown(report))  # plain markdown on stdout: pipe it into a file or a README
    for path in paths:
        console.print(f"wrote {path}", highlight=False)
    return 0


def _load(args: argparse.Namespace) -> int:
    from baton.bench.load import LoadSettings, load_markdown, plot_load, run_load
    from baton.bench.report import write_json

    settings = LoadSettings(model=args.model, modes=tuple(args.modes), steps=args.steps, width=args.size[0],
                            height=args.size[1], max_queue=args.max_queue, duration_s=args.duration,
                            overload=args.overload, capacity_clients=args.capacity_clients, device=args.device)
    console = Console()
    report = run_load(settings, log=lambda line: console.print(line, highlight=False))
    out = args.out or RESULTS_DIR / f"load-{args.model.replace('/', '_')}-{datetime.datetime.now():%Y%m%d-%H%M}"
    out.mkdir(parents=True, exist_ok=True)
    write_json(report, out / "load.json")
    (out / "load.md").write_text(load_markdown(report))
    plot_load(report, out / "load.png")
    print(load_markdown(report))
    for name in ("load.json", "load.md", "load.png"):
        console.print(f"wrote {out / name}", highlight=False)
    return 0


def _scale(args: argparse.Namespace) -> int:
    from baton.bench.report import write_outputs
    from baton.bench.scale import ScaleSettings, run_scale
    from baton.bench.scale_report import plot_scale, scale_markdown

    settings = ScaleSettings(model=args.model, device=args.device, layouts=tuple(args.layouts),
                             concurrency=args.concurrency, requests=args.requests, rounds=args.rounds,
                             steps=args.steps, width=args.size[0], height=args.size[1],
                             overhead_pairs=args.overhead_pairs, kill_requests=args.kill_requests)
    console = Console()
    report = run_scale(settings, log=lambda line: console.print(line, highlight=False))
    out = args.out or RESULTS_DIR / f"scale-{args.model.replace('/', '_')}-{datetime.datetime.now():%Y%m%d-%H%M}"
    paths = write_outputs(report, out, "scale", scale_markdown, plot_scale)
    print(scale_markdown(report))
    for path in paths:
        console.print(f"wrote {path}", highlight=False)
    return 0


def _optimizations(args: argparse.Namespace) -> int:
    from baton.bench.optimizations import run_optimizations
    from baton.bench.optimizations_report import optimizations_markdown, write_optimizations_outputs

    settings = optimization_settings(args)
    width, height = settings.width, settings.height
    console = Console()
    report = run_optimizations(settings, log=lambda line: console.print(line, highlight=False))
    out = args.out
    if out is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M")
        size = f"{width}x{height}" if width else "native"
        out = RESULTS_DIR / f"optimizations-{args.model.replace('/', '_')}-{size}-{stamp}"
    paths = write_optimizations_outputs(report, out)
    print(optimizations_markdown(report))
    for path in paths:
        console.print(f"wrote {path}", highlight=False)
    return 0


def _quality(args: argparse.Namespace) -> int:
    from baton.bench.quality import QualitySettings, run_quality
    from baton.bench.quality_report import quality_markdown, write_quality_outputs

    settings = QualitySettings(model=args.model, prompts=args.prompts, steps=tuple(args.steps),
                               guidance=tuple(args.guidance), free_form_seeds=args.free_form_seeds,
                               free_form_prompts=args.free_form_prompts,
                               device=args.device, only=tuple(args.only), compile_cache=args.compile_cache)
    console = Console()
    report = run_quality(settings, log=lambda line: console.print(line, highlight=False))
    out = args.out or RESULTS_DIR / f"quality-{args.model.replace('/', '_')}-{datetime.datetime.now():%Y%m%d-%H%M}"
    paths = write_quality_outputs(report, out)
    print(quality_markdown(report))
    for path in paths:
        console.print(f"wrote {path}", highlight=False)
    return 0


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _ints(text: str) -> list[int]:
    try:
        return [int(part) for part in _names(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _floats(text: str) -> list[float]:
    try:
        return [float(part) for part in _names(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
