"""The ``baton`` command line: ``generate``, ``serve``, ``demo``, ``train-shapes``, ``models``, ``info``, ``bench``,
``deploy``, ``plan``.

Building the parser imports neither torch nor diffusers (``baton --help`` answers at once); each command imports
what it needs. Every error is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import platform
import sys
import warnings
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from baton import __version__
from baton.cluster.cli_args import add_scale_out_args, engine_factory, run_on_ray, serve_placement
from baton.config import DTYPE_NAMES, ENGINE_MODES, EngineConfig, RequestLimits
from baton.optim.cli_args import add_optimization_args, config_from_args
from baton.request import DEFAULT_STEPS, parse_size
from baton.server.settings import ServerConfig

console = Console()
err_console = Console(stderr=True, soft_wrap=True, highlight=False)

DEVICE_HELP = "auto (CUDA when available, else the CPU), cpu, cuda or cuda:N"
DTYPE_HELP = "auto: float16 on CUDA, float32 on a CPU"
MODE_HELP = "stacked: the plain diffusers pipeline, one request at a time (the baseline)"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)  # a bad flag exits 2 here, in one line (_Parser.error)
    if not args.verbose:
        _quiet_libraries()
    logging.basicConfig(level=logging.WARNING if not args.verbose else logging.INFO, format="%(name)s: %(message)s")
    from baton.errors import BatonError

    try:
        return args.handler(args)
    # ModelLoadError is a ValueError; an ImportError is an optional extra that is not installed (ray)
    except (BatonError, ValueError, OSError, ImportError) as exc:
        _error(f"baton {args.command}", _with_flag_names(str(exc)))
        return 2
    except KeyboardInterrupt:
        _error(f"baton {args.command}", "interrupted")
        return 130


_SERVER_FLAGS: dict[str, tuple[tuple[str, str, type | None, str], ...]] = {
    "limits": (
        ("--request-timeout", "request_timeout_s", float, "seconds before a request gets 504"),
        ("--max-prompt-chars", "max_prompt_chars", int, "longest prompt or negative prompt"),
        ("--max-body-bytes", "max_body_bytes", int, "largest request body (413 beyond)"),
        ("--max-pixels", "max_pixels_per_request", int, "most images x width x height per request"),
        ("--openai-steps", "openai_steps", int,
         "denoising steps of /v1/images/generations requests (OpenAI's API has no such field)"),
    ),
    "image URLs": (
        ("--public-url", "public_url", str,
         "base URL clients reach this server at, for image URLs (default: relative URLs)"),
        ("--capability-urls", "capability_urls", None,
         "image URLs work without the API key (192 random bits each, for <img> tags)"),
    ),
    "health, shutdown and slow clients (seconds)": (
        ("--stuck-after", "stuck_after_s", float,
         "/readyz turns 503 when one step runs this long, or requests wait this long without progress"),
        ("--drain-timeout", "drain_timeout_s", float,
         "after SIGTERM, how long in-flight requests may take to finish before they are failed and the process "
         "exits (a second signal ends the wait)"),
        ("--header-timeout", "header_timeout_s", float,
         "a connection that has not sent a request's headers in this time is closed"),
        ("--body-timeout", "body_timeout_s", float,
         "a request body not all there this long after its headers gets 408"),
        ("--keep-alive", "keep_alive_s", float, "an idle keep-alive connection is closed after this long"),
    ),
}
"""``baton serve``'s flags for :class:`ServerConfig` fields, by help group: (flag, field, type, help); a flag
stores into its field's name (``args.drain_timeout_s``), and a type of ``None`` is an on/off switch."""

_FLAG_OF_FIELD = {
    **{field: flag for flags in _SERVER_FLAGS.values() for flag, field, _, _ in flags},
    "max_queue": "--max-queue", "max_queued_pixel_steps": "--max-queued-pixel-steps", "max_size": "--max-size",
    "model_max_size": "--max-size", "dtype": "--dtype", "device": "--device", "offload": "--offload",
    # `baton serve --backend ray` (baton.deploy.ray.RayOptions)
    "num_gpus": "--num-gpus", "num_cpus": "--num-cpus", "num_replicas": "--replicas", "min_replicas": "--min-replicas",
    "max_replicas": "--max-replicas", "target_ongoing_requests": "--target-ongoing-requests",
    "max_ongoing_requests": "--max-ongoing-requests",
}
"""Settings whose errors (raised by the config classes, in their field names) a user knows by their flags."""


def _with_flag_names(message: str) -> str:
    for field, flag in _FLAG_OF_FIELD.items():
        message = message.replace(f"`{field}`", f"`{flag}`")
    return message


def _error(prog: str, message: str) -> None:
    """One line on stderr, whatever the message holds (a library's exception text can span lines)."""
    err_console.print(Text.assemble((f"{prog}: error: ", "bold red"), " ".join(message.split())))


def _quiet_libraries() -> None:
    """No library chatter unless ``--verbose``: transformers' notices (torchvision is missing, which nothing here
    needs), the loading progress bars, and the deprecation warnings libraries raise about each other. Environment
    variables, because the libraries read them once, at import, which comes after this (the parser imports none)."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # diffusers' "Loading pipeline components" bar has no switch before import; tqdm's own default does. A bar
    # that passes `disable=False` (baton's compile warm-up, minutes long, on a terminal) still shows.
    os.environ.setdefault("TQDM_DISABLE", "1")
    # only what the libraries warn about each other; a warning about baton's own use of them must be fixed, not hidden
    warnings.filterwarnings("ignore", module=r"(diffusers|transformers|huggingface_hub|accelerate|torch)(\.|$)")
    # imported already (a program calling main(), the tests): too late for the environment, so their switches
    for library in ("diffusers", "transformers"):
        if library in sys.modules:
            library_logging = importlib.import_module(f"{library}.utils.logging")
            library_logging.set_verbosity_error()
            library_logging.disable_progress_bar()


class _DefaultsFormatter(argparse.HelpFormatter):
    """Help that shows each option's default, unless it is unset or the help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        unset = action.default is None or action.default is False or action.default is argparse.SUPPRESS
        if not action.option_strings or unset or "(default" in help_text:
            return help_text
        return f"{help_text} (default: %(default)s)".strip()


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (its own are a usage block and a line) and defaults in the help."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", _DefaultsFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        _error(self.prog, f"{message} (see `{self.prog} --help`)")
        self.exit(2)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="baton", description="A serving engine for text-to-image diffusion models.")
    parser.add_argument("--version", action="version", version=f"baton {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log what the engine does, and show the libraries' warnings and progress bars")
    commands = parser.add_subparsers(dest="command", required=True)
    engine_default = EngineConfig.__dataclass_fields__
    server_default = {name: spec.default for name, spec in ServerConfig.__dataclass_fields__.items()}

    generate = commands.add_parser("generate", help="generate images from a prompt and write them to a folder")
    generate.add_argument("prompt")
    generate.add_argument("--model", default="shapes", help="built-in name (see `baton models`), folder or hub id")
    generate.add_argument("--negative-prompt", default=None, help="what the images should not show")
    generate.add_argument("-n", "--num-images", type=int, default=1, help="images to generate")
    generate.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="denoising steps")
    generate.add_argument("--guidance", type=float, default=None, help="guidance scale (default: the model's)")
    generate.add_argument("--seed", type=int, default=None, help="(default: a random one, printed)")
    generate.add_argument("--size", type=_size, default=None, help="WIDTHxHEIGHT (default: the model's)")
    generate.add_argument("--scheduler", default="default", help="sampler name (default: the model's own)")
    generate.add_argument("--format", choices=("png", "jpeg", "webp"), default="png", help="image file format")
    generate.add_argument("--out", type=_out_folder, default="outputs", help="folder to write the images to")
    generate.add_argument("--device", default=engine_default["device"].default, help=DEVICE_HELP)
    generate.add_argument("--dtype", default=engine_default["dtype"].default, choices=DTYPE_NAMES, help=DTYPE_HELP)
    generate.add_argument("--mode", default=engine_default["mode"].default, choices=ENGINE_MODES, help=MODE_HELP)
    generate.add_argument("--profile", type=Path, default=None, metavar="DIR",
                          help="write a torch.profiler trace and a per-stage summary of this generation to DIR")
    _add_max_size_arg(generate)
    add_optimization_args(generate)
    generate.set_defaults(handler=_generate)

    serve = commands.add_parser("serve", help="serve the OpenAI-compatible images API and the native API over HTTP")
    serve.add_argument("--model", default="shapes", help="model(s) to load, comma-separated; the first is the "
                                                            "default")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on (0: a free one, printed)")
    serve.add_argument("--device", default=engine_default["device"].default, help=DEVICE_HELP)
    serve.add_argument("--dtype", default=engine_default["dtype"].default, choices=DTYPE_NAMES, help=DTYPE_HELP)
    serve.add_argument("--mode", default=engine_default["mode"].default, choices=ENGINE_MODES, help=MODE_HELP)
    serve.add_argument("--api-key-file", type=Path, default=None,
                       help="file of API keys, one per line (default: $BATON_API_KEYS, comma-separated; none: no auth)")
    groups = {title: serve.add_argument_group(title) for title in _SERVER_FLAGS}
    limits = groups["limits"]
    limits.add_argument("--max-queue", type=int, default=engine_default["max_queue"].default,
                        help="requests in flight before 429")
    limits.add_argument("--max-queued-pixel-steps", type=int, default=None,
                        help="work in flight (images x width x height x steps) before 429 (default: 128 images at "
                             "the largest model's native size and 30 steps)")
    _add_max_size_arg(limits)
    for title, flags in _SERVER_FLAGS.items():
        for flag, field, kind, help_text in flags:
            if kind is None:
                groups[title].add_argument(flag, dest=field, action="store_true", help=help_text)
            else:
                groups[title].add_argument(flag, dest=field, type=kind, default=server_default[field],
                                           help=help_text, metavar=flag.removeprefix("--").replace("-", "_").upper())
    add_scale_out_args(serve)
    add_optimization_args(serve)
    serve.set_defaults(handler=_serve)

    demo = commands.add_parser("demo", help="draw a grid of shapes prompts through the staged engine into one PNG")
    demo.add_argument("--model", default="shapes", help="a model trained on shapes captions (default: the built-in)")
    demo.add_argument("--steps", type=int, default=None, help="denoising steps (default: the engine's)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the first prompt (the others follow it)")
    demo.add_argument("--out", type=_out_folder, default="outputs/demo", help="folder to write the grid to")
    demo.add_argument("--device", default=engine_default["device"].default, help=DEVICE_HELP)
    demo.add_argument("--dtype", default=engine_default["dtype"].default, choices=DTYPE_NAMES, help=DTYPE_HELP)
    add_optimization_args(demo)
    demo.set_defaults(handler=_demo)

    train = commands.add_parser("train-shapes", help="train the small shapes model (CPU or GPU), from scratch or on "
                                "from saved weights")
    train.add_argument("--out", type=_out_folder, required=True, help="folder to save the pipeline to")
    train.add_argument("--vae-minutes", type=float, default=7.0)
    train.add_argument("--unet-minutes", type=float, default=75.0)
    train.add_argument("--tiny-vae-minutes", type=float, default=2.0)
    train.add_argument("--tiny-vae-only", action="store_true",
                       help="only train the tiny autoencoder of the model already saved in --out (into its vae_tiny)")
    train.add_argument("--resume", type=Path, default=None, metavar="DIR",
                       help="continue from the model saved in DIR: its VAE and tiny autoencoder are kept, the UNet "
                            "and text encoder train on for --unet-minutes (DIR may be --out)")
    train.add_argument("--batch", type=int, default=32)
    train.add_argument("--scenes", type=int, default=20_000, help="training scenes encoded to latents")
    train.add_argument("--eval-prompts", type=int, default=64, help="held-out template captions scored at the end")
    train.add_argument("--eval-free-form", type=int, default=66,
                       help="free-form prompts scored at the end (N of the 66, spread over the styles)")
    train.add_argument("--seed", type=int, default=0)
    train.set_defaults(handler=_train_shapes)

    models = commands.add_parser("models", help="list the built-in models with their parameter counts")
    models.set_defaults(handler=_models)

    info = commands.add_parser(
        "info", help="versions, devices and dtypes available here; with --model, what an engine would apply"
    )
    info.add_argument("--model", default=None, help="load this model and report the optimizations applied to it")
    info.add_argument("--device", default=engine_default["device"].default, help=DEVICE_HELP)
    info.add_argument("--dtype", default=engine_default["dtype"].default, choices=DTYPE_NAMES, help=DTYPE_HELP)
    add_optimization_args(info)
    info.set_defaults(handler=_info)

    from baton.bench.cli import add_bench_parser

    add_bench_parser(commands, _size)
    from baton.deploy.k8s import add_parser as add_deploy_parser

    add_deploy_parser(commands)
    from baton.deploy.plan import add_parser as add_plan_parser

    add_plan_parser(commands)
    return parser


def _size(text: str) -> tuple[int, int]:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _out_folder(text: str) -> Path:
    """A folder to write to, refused at parse time when a file has its name: before any model loads or trains."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a file; give a folder (it is created if missing)")
    return path


def _add_max_size_arg(parser) -> None:
    parser.add_argument("--max-size", type=_max_size, action="append", default=None, metavar="[MODEL=]SIDE",
                        help="largest width or height a request may ask for: SIDE for every model, MODEL=SIDE for "
                             "one (repeatable) (default: the model folder's baton.json, else twice the native side)")


def _max_size(text: str) -> int | tuple[str, int]:
    model, _, side = text.rpartition("=")
    if not (side.isascii() and side.isdigit()) or (model == "" and "=" in text):
        raise argparse.ArgumentTypeError(f"must be SIDE or MODEL=SIDE, like 512 or shapes=128, got {text!r}")
    return (model, int(side)) if model else int(side)


def _limits(args: argparse.Namespace, models: tuple[str, ...]) -> RequestLimits:
    """RequestLimits from ``--max-size``: at most one SIDE for every model, and MODEL=SIDE for loaded models."""
    given = args.max_size or []
    every = [value for value in given if isinstance(value, int)]
    per_model = [value for value in given if isinstance(value, tuple)]
    if len(every) > 1:
        raise ValueError(f"`--max-size` for every model is given {len(every)} times ({every}); give it once")
    names = [model for model, _ in per_model]
    for model in names:
        if model not in models:
            raise ValueError(f"`--max-size` names {model!r}, which is not loaded here (models: {', '.join(models)})")
        if names.count(model) > 1:
            raise ValueError(f"`--max-size` names {model!r} more than once")
    return RequestLimits(max_size=every[0] if every else None, model_max_size=tuple(per_model))


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
    engine = _engine(args, mode=args.mode, limits=_limits(args, (args.model,)))
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
    from baton.device import resolve_dtype
    from baton.optim import check_optimizations
    from baton.server import create_app
    from baton.server.auth import load_api_keys
    from baton.server.run import bind_socket, serve

    # 1. settings: whatever cannot run fails here, in one line. The engine loads in the background once the
    #    server listens, where its own checks would only turn /healthz red.
    models = tuple(name.strip() for name in args.model.split(",") if name.strip())
    devices, device = serve_placement(args)
    engine_config = config_from_args(args, device.type, models=models, device=args.device, dtype=args.dtype,
                                     max_queue=args.max_queue, mode=args.mode, limits=_limits(args, models),
                                     max_queued_pixel_steps=args.max_queued_pixel_steps)
    resolve_dtype(engine_config.dtype, device)
    check_optimizations(engine_config, device)
    keys = load_api_keys(args.api_key_file)
    server_config = ServerConfig(api_keys=keys, **{field: getattr(args, field) for flags in _SERVER_FLAGS.values()
                                                   for _, field, _, _ in flags})
    if args.backend == "ray":
        return run_on_ray(args, engine_config, server_config,
                          announce=lambda text: console.print(text, highlight=False, soft_wrap=True))
    app = create_app(engine_config, server_config, engine_factory(args, devices, server_config.stuck_after_s))
    # 2. the port: taken before the URL is announced, so a busy one is an error and the banner is always true
    sock = bind_socket(args.host, args.port)
    logging.getLogger("baton.server").setLevel(logging.INFO)
    host = f"[{args.host}]" if ":" in args.host else args.host
    console.print(f"baton serving {', '.join(models)} at [bold]http://{host}:{sock.getsockname()[1]}[/] "
                  f"({'API keys required' if keys else 'no auth'}); /readyz turns 200 once the models are loaded",
                  highlight=False, soft_wrap=True)
    # 3. serve until SIGTERM or Ctrl-C, then drain (baton.server.run)
    return serve(app, sock)


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
                  f"every attribute the prompt names right in {right} of {images}", highlight=False, soft_wrap=True)
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
                          seed=args.seed, eval_prompts=args.eval_prompts, eval_free_form=args.eval_free_form,
                          resume=args.resume, log=log)
    free_form = record["eval_free_form"]["overall"]["all named"]
    console.print(f"held-out template accuracy {record['eval']}; free-form prompts with every named attribute "
                  f"right: {free_form:.1%}; saved to {args.out}", highlight=False, soft_wrap=True)
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

    table = Table(title="built-in models (any diffusers SD1.x, SDXL, SD3, Flux or PixArt-Σ folder or hub id loads too)")
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
