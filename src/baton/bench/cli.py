"""``baton bench ...`` argument parsing and output, kept apart from the main CLI."""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path

from rich.console import Console

RESULTS_DIR = Path("benchmarks/results")


def add_bench_parser(commands: argparse._SubParsersAction, size_type) -> None:
    bench = commands.add_parser("bench", help="benchmarks that compare baton with the plain diffusers pipeline")
    benches = bench.add_subparsers(dest="bench", required=True)

    serve = benches.add_parser(
        "serve",
        help="stacked vs staged vs step-batched vs the batched ceiling, under C concurrent clients",
        description="Drive the engine with C concurrent clients in a closed loop (or Poisson arrivals with "
        "--rate) in every mode, in one run, and report images/s, latency percentiles and what the denoiser did.",
    )
    serve.add_argument("--model", default="tiny-sd15", help="built-in name, folder or hub id")
    serve.add_argument("--modes", type=_names, default="stacked,staged,staged-step,batched-ceiling",
                       help="comma-separated: stacked, staged, staged-step, batched-ceiling")
    serve.add_argument("--concurrency", type=_ints, default="1,2,4,8", help="closed-loop clients, e.g. 1,2,4,8")
    serve.add_argument("--rate", type=_floats, default=None,
                       help="Poisson arrival rates in requests/s (replaces the closed loop), e.g. 2,4,8")
    serve.add_argument("--requests", type=int, default=32, help="measured requests per mode and load point")
    serve.add_argument("--rounds", type=int, default=1,
                       help="repeat the whole sweep this many times, interleaved, and pool the rounds")
    serve.add_argument("--warmup", type=int, default=None, help="unmeasured requests before each point")
    serve.add_argument("--steps", type=int, default=20)
    serve.add_argument("--size", type=size_type, default=(128, 128), help="WIDTHxHEIGHT")
    serve.add_argument("--guidance", type=float, default=None, help="guidance scale (default: the model's)")
    serve.add_argument("--device", default="auto")
    serve.add_argument("--dtype", default="auto", choices=("auto", "float32", "float16", "bfloat16"))
    serve.add_argument("--max-rows", type=int, default=16, help="denoiser rows per forward (2 per guided image)")
    serve.add_argument("--no-timeline", action="store_true", help="skip the two-request timeline")
    serve.add_argument("--out", type=Path, default=None,
                       help="folder for serve.json, serve.md and the charts (default: a new folder in "
                            "benchmarks/results/ unless --json/--markdown/--plot say where)")
    serve.add_argument("--json", type=Path, default=None, help="write the JSON report here")
    serve.add_argument("--markdown", type=Path, default=None, help="write the markdown table here")
    serve.add_argument("--plot", type=Path, default=None, help="write the PNG charts into this folder")
    serve.set_defaults(handler=_serve)

    optimizations = benches.add_parser(
        "optimizations",
        help="latency, peak memory and image drift of each optimization and preset (the SDXL write-up's table)",
        description="Run each optimization configuration and preset in its own process: last-of-N latency, peak "
        "memory, and PSNR against the float32 reference of the same seed.",
    )
    optimizations.add_argument("--model", default="tiny-sdxl")
    optimizations.add_argument("--images", type=int, default=4, help="images per generation")
    optimizations.add_argument("--steps", type=int, default=50)
    optimizations.add_argument("--size", type=size_type, default=None, help="WIDTHxHEIGHT (default: the model's)")
    optimizations.add_argument("--iterations", type=int, default=3)
    optimizations.add_argument("--device", default="auto")
    optimizations.add_argument("--half", default="auto", choices=("auto", "float16", "bfloat16"),
                               help="the half precision of the rows (auto: float16 on CUDA, bfloat16 on a CPU)")
    optimizations.add_argument("--only", type=_names, default="",
                               help="comma-separated parts of row names to run (the reference always runs)")
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

    quality = benches.add_parser(
        "quality",
        help="prompt accuracy and drift of every optimization, preset, sampler and step count (shapes model)",
        description="Draw held-out shapes prompts with each configuration, each in its own process; report the "
        "detector's colour/shape/count accuracy and PSNR/SSIM against the float32 reference of the same seed.",
    )
    quality.add_argument("--model", default="shapes", help="a model trained on shapes captions")
    quality.add_argument("--prompts", type=int, default=200, help="held-out prompts per row")
    quality.add_argument("--steps", type=_ints, default="10,20,50",
                         help="step counts measured besides the default, e.g. 10,20,50")
    quality.add_argument("--device", default="auto")
    quality.add_argument("--only", type=_names, default="",
                         help="comma-separated parts of row names to run (the reference always runs)")
    quality.add_argument("--compile-cache", default=None, help="persistent compile cache folder")
    quality.add_argument("--out", type=Path, default=None,
                         help="folder for quality.json/.md/.png (default: a new folder in benchmarks/results/)")
    quality.set_defaults(handler=_quality)


def _serve(args: argparse.Namespace) -> int:
    from baton.bench.report import serve_markdown, write_serve_outputs
    from baton.bench.serve import ServeSettings, run_serve

    settings = ServeSettings(
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
        max_rows=args.max_rows,
        warmup=args.warmup,
        timeline=not args.no_timeline,
    )
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


def _optimizations(args: argparse.Namespace) -> int:
    from baton.bench.optimizations import OptimizationSettings, run_optimizations
    from baton.bench.optimizations_report import optimizations_markdown, write_optimizations_outputs

    width, height = args.size if args.size else (None, None)
    settings = OptimizationSettings(
        model=args.model, images=args.images, steps=args.steps, width=width, height=height, device=args.device,
        half=args.half, iterations=args.iterations, only=tuple(args.only), compile_cache=args.compile_cache,
    )
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

    settings = QualitySettings(model=args.model, prompts=args.prompts, steps=tuple(args.steps), device=args.device,
                               only=tuple(args.only), compile_cache=args.compile_cache)
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
