"""The ``baton`` command line: ``generate``, ``serve``, ``demo``, ``train-shapes``, ``models``, ``info``, ``bench``."""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from baton import __version__
from baton.optim.cli_args import add_optimization_args, config_from_args

console = Console()


def main(argv: list[str] | None = None) -> int:
    # transformers warns at import that torchvision is missing (it is not needed here): keep the terminal clean.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if not args.verbose else logging.INFO, format="%(name)s: %(message)s")
    from baton.errors import BatonError
    from baton.models import ModelLoadError

    try:
        return args.handler(args)
    except (BatonError, ModelLoadError, ValueError) as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)  # whole, for grep and logs
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="baton", description="A serving engine for text-to-image diffusion models.")
    parser.add_argument("--version", action="version", version=f"baton {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the engine does")
    commands = parser.add_subparsers(dest="command", required=True)

    generate = commands.add_parser("generate", help="generate images from a prompt and write them to a folder")
    generate.add_argument("prompt")
    generate.add_argument("--model", default="shapes", help="built-in name (see `baton models`), folder or hub id")
    generate.add_argument("--negative-prompt", default=None)
    generate.add_argument("-n", "--num-images", type=int, default=1)
    generate.add_argument("--steps", type=int, default=30)
    generate.add_argument("--guidance", type=float, default=None, help="guidance scale (default: the model's)")
    generate.add_argument("--seed", type=int, default=None)
    generate.add_argument("--size", type=_size, default=None, help="WIDTHxHEIGHT (default: the model's)")
    generate.add_argument("--scheduler", default="default")
    generate.add_argument("--format", choices=("png", "jpeg", "webp"), default="png")
    generate.add_argument("--out", type=Path, default=Path("outputs"))
    generate.add_argument("--device", default="auto")
    generate.add_argument("--dtype", default="auto", choices=("auto", "float32", "float16", "bfloat16"))
    generate.add_argument("--mode", default="staged", choices=("staged", "stacked"))
    generate.add_argument("--profile", type=Path, default=None, metavar="DIR",
                          help="write a torch.profiler trace and a per-stage summary of this generation to DIR")
    add_optimization_args(generate)
    generate.set_defaults(handler=_generate)

    serve = commands.add_parser("serve", help="serve the OpenAI-compatible images API and the native API over HTTP")
    serve.add_argument("--model", default="shapes", help="model(s) to load, comma-separated; the first is the "
                                                            "default")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--device", default="auto")
    serve.add_argument("--dtype", default="auto", choices=("auto", "float32", "float16", "bfloat16"))
    serve.add_argument("--max-queue", type=int, default=256, help="requests in flight before 429")
    serve.add_argument("--mode", default="staged", choices=("staged", "stacked"),
                       help="stacked: the plain diffusers pipeline behind the same API (the baseline)")
    serve.add_argument("--api-key-file", type=Path, default=None,
                       help="file of API keys, one per line (default: $BATON_API_KEYS, comma-separated; none: no auth)")
    serve.add_argument("--request-timeout", type=float, default=300.0, help="seconds before a request gets 504")
    serve.add_argument("--max-prompt-chars", type=int, default=2000)
    serve.add_argument("--max-body-bytes", type=int, default=1 << 20, help="largest request body (413 beyond)")
    serve.add_argument("--openai-steps", type=int, default=30,
                       help="denoising steps of /v1/images/generations requests (OpenAI's API has no such field)")
    serve.add_argument("--max-pixels", type=int, default=16 * 1024 * 1024, help="most images x width x height per "
                                                                                "request")
    add_optimization_args(serve)
    serve.set_defaults(handler=_serve)

    demo = commands.add_parser("demo", help="draw a grid of shapes prompts through the staged engine into one PNG")
    demo.add_argument("--model", default="shapes", help="a model trained on shapes captions (default: the built-in)")
    demo.add_argument("--steps", type=int, default=None, help="denoising steps (default: the engine's)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--out", type=Path, default=Path("outputs/demo"))
    demo.add_argument("--device", default="auto")
    demo.add_argument("--dtype", default="auto", choices=("auto", "float32", "float16", "bfloat16"))
    add_optimization_args(demo)
    demo.set_defaults(handler=_demo)

    train = commands.add_parser("train-shapes", help="train the small shapes model from scratch (CPU or GPU)")
    train.add_argument("--out", type=Path, required=True, help="folder to save the pipeline to")
    train.add_argument("--vae-minutes", type=float, default=7.0)
    train.add_argument("--unet-minutes", type=float, default=33.0)
    train.add_argument("--tiny-vae-minutes", type=float, default=2.0)
    train.add_argument("--tiny-vae-only", action="store_true",
                       help="only train the tiny autoencoder of the model already saved in --out (into its vae_tiny)")
    train.add_argument("--batch", type=int, default=32)
    train.add_argument("--scenes", type=int, default=20_000, help="training scenes encoded to latents")
    train.add_argument("--eval-prompts", type=int, default=64, help="held-out captions scored at the end")
    train.add_argument("--seed", type=int, default=0)
    train.set_defaults(handler=_train_shapes)

    models = commands.add_parser("models", help="list the built-in models with their parameter counts")
    models.set_defaults(handler=_models)

    info = commands.add_parser(
        "info", help="versions, devices and dtypes available here; with --model, what an engine would apply"
    )
    info.add_argument("--model", default=None, help="load this model and report the optimizations applied to it")
    info.add_argument("--device", default="auto")
    info.add_argument("--dtype", default="auto", choices=("auto", "float32", "float16", "bfloat16"))
    add_optimization_args(info)
    info.set_defaults(handler=_info)

    from baton.bench.cli import add_bench_parser

    add_bench_parser(commands, _size)
    return parser


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"`--size` must look like 512x512, got {text!r}") from None
    return width, height


def _generate(args: argparse.Namespace) -> int:
    from baton import GenerationRequest

    width, height = args.size if args.size else (None, None)
    request = GenerationRequest(
        prompt=args.prompt,
        negative_prompt=args.negative_prompt,
        num_images=args.num_images,
        width=width,
        height=height,
        steps=args.steps,
        guidance_scale=args.guidance,
        seed=args.seed,
        scheduler=args.scheduler,
        output_format=args.format,
    )
    engine = _engine(args, mode=args.mode)
    with engine:
        request = engine.resolve(request)  # bad input fails here, before any model work
        with _profile(args.profile, engine.device) as profile, _progress() as progress:
            task = progress.add_task("denoising", total=request.steps)
            future = engine.submit(request, progress=lambda done, total: progress.update(task, completed=done,
                                                                                         total=total))
            result = future.result()
            progress.update(task, completed=progress.tasks[0].total)
    args.out.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, data in enumerate(result.encoded or []):
        path = args.out / f"{result.seed}-{index}.{'jpg' if args.format == 'jpeg' else args.format}"
        path.write_bytes(data)
        paths.append(path)
    _print_timings(result, engine.describe())
    for path in paths:
        console.print(f"wrote {path}")
    if args.profile is not None:
        console.print(f"wrote {profile['trace']} (open in https://ui.perfetto.dev) and {profile['summary_path']}")
    return 0


def _engine(args: argparse.Namespace, **fields):
    import dataclasses

    from baton import Engine
    from baton.device import resolve_device

    device_type = resolve_device(args.device).type
    config = config_from_args(args, device_type, models=(args.model,), device=args.device, dtype=args.dtype, **fields)
    compile_config = config.optimizations.compile
    if getattr(args, "size", None) and not compile_config.sizes and config.optimizations.static_shapes:
        # compile (or capture) the size asked for, not only the model's native one
        compile_config = dataclasses.replace(compile_config, sizes=(tuple(args.size),))
        config = dataclasses.replace(
            config, optimizations=dataclasses.replace(config.optimizations, compile=compile_config)
        )
    with console.status(f"loading {args.model} …"):
        return Engine(config)


def _serve(args: argparse.Namespace) -> int:
    from baton.device import resolve_device
    from baton.server import ServerConfig, create_app
    from baton.server.app import load_api_keys
    from baton.server.run import serve

    models = tuple(name.strip() for name in args.model.split(",") if name.strip())
    engine_config = config_from_args(args, resolve_device(args.device).type, models=models, device=args.device,
                                     dtype=args.dtype, max_queue=args.max_queue, mode=args.mode)
    keys = load_api_keys(args.api_key_file)
    server_config = ServerConfig(api_keys=keys, request_timeout_s=args.request_timeout,
                                 max_prompt_chars=args.max_prompt_chars, max_pixels_per_request=args.max_pixels,
                                 openai_steps=args.openai_steps, max_body_bytes=args.max_body_bytes)
    logging.getLogger("baton.server").setLevel(logging.INFO)
    console.print(f"baton serving {', '.join(models)} at [bold]http://{args.host}:{args.port}[/] "
                  f"({'API keys required' if keys else 'no auth'}); /readyz turns 200 once the models are loaded",
                  highlight=False)
    serve(create_app(engine_config, server_config), args.host, args.port)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from baton.shapes.demo import run_demo

    with _engine(args) as engine:
        demo = run_demo(engine, args.out, steps=args.steps, seed=args.seed)
        info = engine.describe()
    table = Table(title=f"{len(demo.results)} prompts submitted together · {info['models'][0]['name']} · "
                        f"{info['mode']} · {info['device']} · {info['dtype']}")
    for column in ("stage", "mean queue wait (ms)", "mean run (ms)", "mean batch (images)"):
        table.add_column(column, justify="left" if column == "stage" else "right")
    for stage in demo.results[0].timings:
        timings = [result.timings[stage] for result in demo.results]
        columns = ([t.queue_wait_s * 1e3 for t in timings], [t.run_s * 1e3 for t in timings],
                   [t.batch_images for t in timings])
        table.add_row(stage, *(f"{sum(values) / len(values):.1f}" for values in columns))
    table.add_section()
    latencies = sorted(result.latency_s for result in demo.results)
    table.add_row("end to end", "", f"{sum(latencies) / len(latencies) * 1e3:.1f}", "")
    console.print(table)
    right = sum(all(check.values()) for check in demo.checks)  # as the grid's "detector: all right"
    images = len(demo.results)
    console.print(f"{images} images in {demo.wall_s:.2f} s ({images / demo.wall_s:.2f} images/s); the detector reads "
                  f"colour, shape, count, size and position right in {right} of {images}", highlight=False,
                  soft_wrap=True)
    console.print(f"wrote {demo.path}", highlight=False, soft_wrap=True)
    return 0


def _train_shapes(args: argparse.Namespace) -> int:
    from baton.shapes.train import train_shapes, train_tiny_vae

    log = lambda line: console.print(line, highlight=False)  # noqa: E731
    if args.tiny_vae_only:
        if not (args.out / "vae" / "config.json").is_file():
            raise ValueError(f"`--out` {str(args.out)!r} holds no saved model (no vae/config.json); "
                             "--tiny-vae-only trains the tiny autoencoder of a model train-shapes saved there")
        record = train_tiny_vae(args.out, minutes=args.tiny_vae_minutes, seed=args.seed, log=log)
        console.print(f"tiny VAE reconstructions read back {record['reconstruction']}; saved to {args.out}",
                      highlight=False, soft_wrap=True)
        return 0
    record = train_shapes(args.out, vae_minutes=args.vae_minutes, unet_minutes=args.unet_minutes,
                          tiny_vae_minutes=args.tiny_vae_minutes, batch=args.batch, latent_scenes=args.scenes,
                          seed=args.seed, eval_prompts=args.eval_prompts, log=log)
    console.print(f"held-out accuracy {record['eval']}; saved to {args.out}", highlight=False)
    return 0


def _profile(out_dir: Path | None, device):
    import contextlib

    if out_dir is None:
        return contextlib.nullcontext({})
    from baton.optim.profiling import profiled

    return profiled(out_dir, device)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console,
        transient=False,
    )


def _print_timings(result, engine_info: dict) -> None:
    model = engine_info["models"][0]
    table = Table(
        title=f"{model['name']} · {engine_info['mode']} · {engine_info['device']} · {engine_info['dtype']} · "
        f"seed {result.seed}",
    )
    table.add_column("stage")
    table.add_column("queue wait (ms)", justify="right")
    table.add_column("run (ms)", justify="right")
    table.add_column("batch (images)", justify="right")
    for stage, timing in result.timings.items():
        table.add_row(
            stage, f"{timing.queue_wait_s * 1e3:.1f}", f"{timing.run_s * 1e3:.1f}", f"{timing.batch_images:g}"
        )
    table.add_section()
    table.add_row("end to end", "", f"{result.latency_s * 1e3:.1f}", "")
    console.print(table)


def _models(args: argparse.Namespace) -> int:
    from baton.models import SPECS
    from baton.models.registry import EMBEDDED_MODELS, embedded_parameter_counts
    from baton.optim.vae import TINY_VAE_SUBFOLDER

    table = Table(title="built-in models (any diffusers SD1.x/SDXL folder or hub id loads too)")
    for column in ("name", "family", "parameters", "components", "description"):
        table.add_column(column, justify="right" if column == "parameters" else "left")
    for name in EMBEDDED_MODELS:
        counts = embedded_parameter_counts(name)
        # the tiny autoencoder is listed, but it is a decoder to use instead of the VAE, not part of the pipeline
        pipeline_total = sum(count for part, count in counts.items() if part != TINY_VAE_SUBFOLDER)
        table.add_row(name, "sd15", _human(pipeline_total),
                      ", ".join(f"{part} {_human(count)}" for part, count in counts.items()),
                      "trained here (baton train-shapes): draws coloured shapes from captions, 64x64; the default")
    for spec in SPECS.values():
        counts = spec.parameter_counts()
        table.add_row(
            spec.name,
            spec.family,
            _human(sum(counts.values())),
            ", ".join(f"{name} {_human(count)}" for name, count in counts.items()),
            spec.description,
        )
    console.print(table)
    return 0


def _human(count: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= scale:
            return f"{count / scale:.2f}{unit}"
    return str(count)


def _info(args: argparse.Namespace) -> int:
    import diffusers
    import torch
    import transformers

    table = Table(title="baton info", show_header=False)
    rows = [
        ("baton", __version__),
        ("python", platform.python_version()),
        ("torch", torch.__version__),
        ("diffusers", diffusers.__version__),
        ("transformers", transformers.__version__),
        ("platform", platform.platform()),
        ("cpu threads", str(torch.get_num_threads())),
        ("cuda available", str(torch.cuda.is_available())),
        ("HF_HUB_OFFLINE", os.environ.get("HF_HUB_OFFLINE", "unset")),
    ]
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            rows.append((f"cuda:{index}", f"{props.name}, {props.total_memory / 2**30:.0f} GiB, sm_{props.major}"
                                          f"{props.minor}"))
        rows.append(("cuda dtypes", "float32, float16" + (", bfloat16" if torch.cuda.is_bf16_supported() else "")))
    rows.append(("cpu dtypes", "float32, bfloat16"))
    rows.append(("attention", "SDPA (torch.nn.functional.scaled_dot_product_attention)"))
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
    if args.model is not None:
        with _engine(args) as engine:
            described = engine.describe()
        for model in described["models"]:
            applied = Table(title=f"{model['name']} on {model['device']}: preset {described['preset'] or 'none'}",
                            show_header=False)
            for line in model["optimizations"]:
                applied.add_row(line)
            applied.add_row(f"samplers: {', '.join(model['schedulers'])}")
            console.print(applied)
    return 0


if __name__ == "__main__":
    sys.exit(main())
