"""``baton plan``: from a ``baton bench serve`` result and a target (requests/s within a p95 latency) to a layout:
how many replicas, how many engines share each device, the queue and batch limits, and the ``baton serve`` and
``baton deploy k8s`` commands that run it.

A plan is arithmetic on measurements, so it holds only where they hold: the request shape the bench sent, the
machine it ran on, and the assumptions every plan lists (docs/capacity-planning.md). No torch here: planning runs
anywhere, in milliseconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from baton.config import DenoiseConfig

CANDIDATE_MODES: tuple[str, ...] = ("staged-step", "staged")
"""The bench modes a plan may pick, best first on a tie: baton's staged engine, with step- or request-level
batching. ``stacked`` and ``batched-ceiling`` are the baselines the bench compares with, not layouts to deploy."""
DEFAULT_HEADROOM = 0.8
"""Each replica is planned at this fraction of its measured peak: real arrivals come in bursts, and the closed-loop
bench never saw one."""
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(ms|s)?")


def parse_duration(text: str) -> float:
    """Seconds from ``4s``, ``4.5`` (seconds) or ``800ms``."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None or float(match.group(1)) <= 0:
        raise ValueError(f"must be a positive duration like 4s, 4.5 or 800ms, got {text!r}")
    return float(match.group(1)) / (1000 if match.group(2) == "ms" else 1)


@dataclass(frozen=True, slots=True)
class RequestShape:
    """The one kind of request the bench sent; the plan holds for requests like it only."""

    model: str
    width: int
    height: int
    steps: int
    images: float
    """Images per request (the bench's rows: images served over requests)."""
    guidance_scale: float | None
    """``None``: the model's default."""

    @property
    def pixel_steps(self) -> int:
        """What one such request costs, as the engine's admission counts it (``baton.request.pixel_steps``)."""
        return math.ceil(self.images * self.width * self.height * self.steps)

    def describe(self) -> str:
        guidance = "the model's guidance" if self.guidance_scale is None else f"guidance {self.guidance_scale:g}"
        images = f"{self.images:g} image{'s' if self.images != 1 else ''}"
        return f"{self.model} {self.width}x{self.height}, {self.steps} steps, {guidance}, {images} per request"


@dataclass(frozen=True, slots=True)
class Layout:
    """One measured way to run a device: a closed-loop row of the bench, in per-device terms."""

    mode: str
    engines: int
    """Engine processes sharing one device (``baton serve --replicas-per-device``)."""
    devices: int
    """Devices the row ran on; its throughput is divided among them."""
    concurrency: int
    """Closed-loop clients of the row, over all its devices."""
    images_per_s: float
    """Per device."""
    requests_per_s: float
    """Per device: what one replica (one device) serves at the measured peak."""
    p50_s: float
    p95_s: float
    p99_s: float | None
    meets_p95: bool

    @property
    def in_flight(self) -> int:
        """Requests in flight on one device at the measured point."""
        return math.ceil(self.concurrency / self.devices)

    def describe(self) -> str:
        engines = f"{self.engines} engine{'s' if self.engines != 1 else ''}"
        return f"{self.mode}, {engines} per device, {self.in_flight} in flight per device"


@dataclass(frozen=True, slots=True)
class Plan:
    """What ``baton plan`` answers. ``choice`` is ``None`` when no measured layout meets the p95 target; then
    ``best_p95`` is the lowest p95 measured, and the replica count and commands are empty."""

    target_rps: float
    p95_target_s: float
    headroom: float
    spare: bool
    shape: RequestShape
    machine: str
    candidates: tuple[Layout, ...]
    """Every usable row, best throughput first."""
    skipped: tuple[str, ...]
    """Rows left out, one line per reason."""
    choice: Layout | None
    best_p95: Layout
    replicas: int = 0
    """Replicas, one device each, the spare included."""
    needed: int = 0
    """Replicas the target needs at the headroom, without the spare."""
    load: float = 0.0
    """Fraction of the measured peak each of the ``needed`` replicas runs at."""
    max_queue: int = 0
    """``--max-queue`` of each engine: its share of the requests in flight at the measured point."""
    max_queued_pixel_steps: int = 0
    """``--max-queued-pixel-steps`` of each engine: ``max_queue`` requests of the bench's shape."""
    max_rows: int = 0
    """Denoiser rows per forward the bench ran with."""
    serve_command: str = ""
    """One replica on one host, as measured: its engines behind baton's router."""
    deploy_command: str = ""
    """The same on GKE: one engine per pod; with several engines per device, pods time-share each GPU."""
    deploy_notes: tuple[str, ...] = ()
    """What the ``baton deploy k8s`` line leaves to do by hand, and how to autoscale it."""
    unflagged: tuple[str, ...] = ()
    """Engine settings the bench ran with that no ``baton serve`` flag sets."""
    assumptions: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.choice is not None

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, **dataclasses.asdict(self)}


def load_result(path: Path) -> dict[str, Any]:
    """The JSON of a ``baton bench serve`` result (``serve.json``), checked for what planning reads."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise ValueError(f"`--bench` {str(path)!r} does not exist") from None
    except OSError as exc:
        raise ValueError(f"`--bench` {str(path)!r} cannot be read: {exc.strerror or exc}") from None
    try:
        result = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"`--bench` {str(path)!r} is not JSON ({exc.msg}, line {exc.lineno})") from None
    kind = result.get("benchmark") if isinstance(result, dict) else None
    shaped = (isinstance(result, dict) and isinstance(result.get("results"), list)
              and isinstance(result.get("settings"), dict))
    if kind not in ("serve", "scale") or not shaped:
        found = f"its benchmark is {kind!r}" if kind else "no `benchmark`, `settings` and `results`"
        raise ValueError(f"`--bench` {str(path)!r} is not a `baton bench serve` or `scale` result ({found}); give "
                         "the serve.json or scale.json the bench wrote")
    missing = [key for key in ("model", "width", "height", "steps") if key not in result["settings"]]
    if missing:
        raise ValueError(f"`--bench` {str(path)!r} has no settings {', '.join(missing)}: the request shape is unknown")
    for key in ("width", "height", "steps"):
        value = result["settings"][key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`--bench` {str(path)!r} has settings {key} {value!r}; a positive integer was expected")
    return result


def make_plan(result: dict[str, Any], target_rps: float, p95_s: float, headroom: float = DEFAULT_HEADROOM,
              spare: bool = False, gpu: str | None = None) -> Plan:
    """The layout of highest throughput per device whose measured p95 is within ``p95_s``, and the replicas that
    serve ``target_rps`` requests/s at ``headroom`` of its measured peak (plus one with ``spare``)."""
    # 1. check the targets
    from baton.deploy.k8s import GKE_GPUS

    if gpu is not None and gpu != "none" and gpu not in GKE_GPUS:
        raise ValueError(f"`--gpu` must be a GKE accelerator ({', '.join(GKE_GPUS)}) or none, got {gpu!r}")
    if not (math.isfinite(target_rps) and target_rps > 0):
        raise ValueError(f"`--target-rps` must be a positive number of requests/s, got {target_rps}")
    if not (math.isfinite(p95_s) and p95_s > 0):
        raise ValueError(f"`--p95` must be a positive duration, got {p95_s}")
    if not 0 < headroom <= 1:
        raise ValueError(f"`--headroom` must be in (0, 1], the fraction of the measured peak to plan at, "
                         f"got {headroom}")
    # 2. the usable rows, in per-device terms
    settings, machine = result["settings"], result.get("machine") or {}
    candidates, skipped = _layouts(result["results"], p95_s)
    if not candidates:
        raise ValueError(f"the bench result has no usable row: {'; '.join(skipped) or 'its results are empty'}; "
                         f"measure {' or '.join(CANDIDATE_MODES)} with `baton bench serve --concurrency ...`")
    shape = RequestShape(model=str(settings["model"]), width=int(settings["width"]), height=int(settings["height"]),
                         steps=int(settings["steps"]), images=_images_per_request(result["results"], settings),
                         guidance_scale=settings.get("guidance_scale"))
    best_p95 = min(candidates, key=lambda layout: layout.p95_s)
    base = Plan(target_rps=target_rps, p95_target_s=p95_s, headroom=headroom, spare=spare, shape=shape,
                machine=_machine(machine), candidates=candidates, skipped=skipped, choice=None,
                best_p95=best_p95)
    # 3. the best layout within the target: candidates are sorted best first
    choice = next((layout for layout in candidates if layout.meets_p95), None)
    if choice is None:
        return base
    # 4. replicas, limits, commands
    needed = math.ceil(target_rps / (choice.requests_per_s * headroom) - 1e-9)
    per_engine = math.ceil(choice.in_flight / choice.engines)
    max_rows = int(settings.get("max_rows") or DenoiseConfig().max_rows)
    serve, unflagged = _serve_command(settings, choice, per_engine, per_engine * shape.pixel_steps, max_rows)
    replicas = needed + (1 if spare else 0)
    plan = dataclasses.replace(
        base, choice=choice, replicas=replicas, needed=needed, load=target_rps / (needed * choice.requests_per_s),
        max_queue=per_engine, max_queued_pixel_steps=per_engine * shape.pixel_steps, max_rows=max_rows,
        serve_command=serve, unflagged=unflagged,
    )
    deploy, notes = _deploy_command(plan, choice, settings, machine, gpu)
    return dataclasses.replace(plan, deploy_command=deploy, deploy_notes=notes,
                               assumptions=_assumptions(plan, choice, machine))


def _layouts(rows: list[Any], p95_s: float) -> tuple[tuple[Layout, ...], tuple[str, ...]]:
    """The closed-loop candidate rows that served every request, best first; and why the others were left out."""
    layouts: list[Layout] = []
    reasons: dict[str, int] = {}

    def skip(reason: str) -> None:
        reasons[reason] = reasons.get(reason, 0) + 1

    for row in rows:
        if not isinstance(row, dict):
            skip("not a row")
            continue
        mode = row.get("mode")
        if mode not in CANDIDATE_MODES:
            skip(f"mode {mode} (a baseline, not a layout to deploy)")
            continue
        if row.get("failed"):
            skip("failed requests")
            continue
        if row.get("arrival", "closed") != "closed" or not row.get("concurrency"):
            skip("open-loop arrivals (no fixed number in flight)")
            continue
        numbers = [_number(row.get(key)) for key in ("images_per_s", "p50_s", "p95_s", "images", "requests")]
        if any(value is None or value <= 0 for value in numbers):
            skip("missing throughput or latency")
            continue
        images_per_s, p50, p95, images, requests = numbers
        devices = int(row.get("devices") or 1)
        per_device = images_per_s / devices
        layouts.append(Layout(mode=mode, engines=int(row.get("engines") or 1), devices=devices,
                              concurrency=int(row["concurrency"]), images_per_s=round(per_device, 4),
                              requests_per_s=round(per_device / (images / requests), 4), p50_s=p50, p95_s=p95,
                              p99_s=_number(row.get("p99_s")), meets_p95=p95 <= p95_s))
    # best first: throughput per device, then the lower p95, then the simpler layout
    layouts.sort(key=lambda x: (-x.requests_per_s, x.p95_s, CANDIDATE_MODES.index(x.mode), x.engines, x.concurrency))
    return tuple(layouts), tuple(f"{count} row{'s' if count != 1 else ''}: {reason}" for reason, count in
                                 reasons.items())


def _images_per_request(rows: list[Any], settings: dict[str, Any]) -> float:
    for source in (settings, *rows):
        if isinstance(source, dict) and _number(source.get("images_per_request")):
            return float(source["images_per_request"])
    served = [row for row in rows if isinstance(row, dict) and not row.get("failed") and _number(row.get("requests"))
              and _number(row.get("images"))]
    if not served:
        return 1.0
    return round(sum(row["images"] for row in served) / sum(row["requests"] for row in served), 3)


def _serve_command(settings: dict[str, Any], choice: Layout, max_queue: int, pixel_steps: int,
                   max_rows: int) -> tuple[str, tuple[str, ...]]:
    """``baton serve`` with the bench's model and options and the plan's limits; and the settings no flag sets."""
    from baton.optim.presets import PRESETS, preset_config

    preset = _preset(settings)
    parts = ["baton serve", "--host 0.0.0.0", f"--model {settings['model']}", *_engine_flags(settings)]
    if choice.engines > 1:
        parts.append(f"--replicas-per-device {choice.engines}")
    parts += [f"--max-queue {max_queue}", f"--max-queued-pixel-steps {pixel_steps}"]
    unflagged = []
    if choice.mode == "staged":
        unflagged.append("`denoise.batching='request'` (bench mode staged): `baton serve` batches at step level and "
                         "has no flag for request-level batching")
    device_type = "cuda" if str(settings.get("device", "")).startswith("cuda") else "cpu"
    serve_rows = preset_config(preset, device_type).denoise.max_rows if preset in PRESETS else DenoiseConfig().max_rows
    if max_rows != serve_rows:
        unflagged.append(f"`denoise.max_rows={max_rows}`: `baton serve` runs {serve_rows} denoiser rows per forward "
                         f"and has no flag for it (set it in `EngineConfig(denoise=DenoiseConfig(max_rows=...))`)")
    return " ".join(parts), tuple(unflagged)


def _deploy_command(plan: Plan, choice: Layout, settings: dict[str, Any], machine: dict[str, Any],
                    gpu: str | None) -> tuple[str, tuple[str, ...]]:
    """``baton deploy k8s`` for the plan: one engine per pod (the pods' command has no ``--replicas-per-device``),
    so K engines per device are K pods time-sharing each GPU; and the notes on what it leaves to do."""
    on_gpu = _on_gpu(machine)
    accelerator = gpu or ("ACCELERATOR" if on_gpu else "none")
    pods = plan.replicas * choice.engines
    parts = ["baton deploy k8s", "--image IMAGE", f"--model {settings['model']}", *_engine_flags(settings),
             f"--gpu {accelerator}"]
    if choice.engines > 1 and accelerator != "none":
        parts += ["--sharing time-sharing", f"--max-shared-clients {choice.engines}"]
    parts += [f"--replicas {pods}", f"--max-replicas {pods}"]
    notes = []
    if gpu is None and on_gpu:
        notes.append(f"ACCELERATOR: the GKE accelerator of the measured GPU ({machine.get('gpu', 'unknown')}), "
                     "such as nvidia-h200-141gb; `baton plan --gpu` fills it in")
    elif accelerator == "none":
        notes.append("`--gpu none`: CPU pods, as the bench measured; each pod needs the CPU cores the bench had")
    notes.append(f"the pods' `baton serve` gets no queue limits from `baton deploy k8s`: add `--max-queue "
                 f"{plan.max_queue} --max-queued-pixel-steps {plan.max_queued_pixel_steps}` to the container's "
                 "command in deployment.yaml")
    if choice.engines > 1:
        notes.append(f"{choice.engines} pods per device, one engine each: the Service spreads requests over them, "
                     "where the bench went through baton's router (least outstanding work first)")
    notes.append(f"to autoscale from there, raise `--max-replicas` and set `--target-pending "
                 f"{max(plan.max_queue * plan.headroom, 0.1):.1f}` (each pod's queue limit at the headroom)")
    return " ".join(parts), tuple(notes)


def _engine_flags(settings: dict[str, Any]) -> list[str]:
    """``--dtype`` and ``--preset`` as the bench ran its engines (``baton serve`` and ``baton deploy k8s`` alike)."""
    from baton.optim.presets import PRESETS

    flags = []
    if settings.get("dtype") not in (None, "auto"):
        flags.append(f"--dtype {settings['dtype']}")
    if _preset(settings) in PRESETS:
        flags.append(f"--preset {_preset(settings)}")
    return flags


def _preset(settings: dict[str, Any]) -> str | None:
    options = settings.get("optimizations")
    return options.get("preset") if isinstance(options, dict) else None


def _assumptions(plan: Plan, choice: Layout, machine: dict[str, Any]) -> tuple[str, ...]:
    lines = [f"Measured on {plan.machine}: the numbers hold for that device, driver and dtype only."]
    if not _on_gpu(machine):
        lines.append("Measured without a GPU: the replica count is for replicas like that CPU machine; measure on the "
                     "target GPU (`baton bench serve --device cuda ...`) before sizing a GPU deployment.")
    lines += [
        f"Every request is {plan.shape.describe()}. Larger images or more steps cost more (pixel-steps), so a mix "
        "of sizes needs its own measurement; `--max-queued-pixel-steps` keeps a large request from queueing more "
        "work than the bench ever held.",
        f"Closed-loop clients: the bench kept {choice.concurrency} requests in flight over {choice.devices} "
        f"device{'s' if choice.devices != 1 else ''}, no more, no fewer. Real arrivals come in bursts and queue more "
        f"at the same mean rate; the headroom absorbs that (check with `baton bench serve --rate ...`). An engine "
        f"holding {plan.max_queue} requests answers the next one 429 (to retry elsewhere) instead of breaking the p95.",
        f"Headroom {plan.headroom:.0%}: each replica is planned at {plan.headroom:.0%} of its measured peak of "
        f"{choice.requests_per_s:.3g} requests/s; at the target it runs at {plan.load:.0%} of it.",
        "Linear scaling: each replica adds one replica's measured rate, behind a load balancer that spreads "
        "requests evenly, with no shared bottleneck (storage, network, a node's CPU or PCIe).",
        "No network or HTTP cost: the bench called the engine in-process (PNG encoding included); "
        "`baton bench load` measures through HTTP.",
        "Warm replicas: loading (and compiling) a replica takes time the plan does not count, so scaling up lags "
        "a rise in load; keep the planned replicas as the autoscaler's minimum.",
    ]
    if plan.spare:
        lines.append("One spare replica: losing one (a crash, a restart, a node drain) still meets the target.")
    if choice.engines > 1:
        lines.append(f"`--max-queue` and `--max-queued-pixel-steps` apply to each of the {choice.engines} engine "
                     f"processes on a device ({choice.in_flight} in flight per device in all).")
    return tuple(lines)


def _on_gpu(machine: dict[str, Any]) -> bool:
    return str(machine.get("device", "")).startswith("cuda")


def _machine(machine: dict[str, Any]) -> str:
    device = machine.get("device") or "an unknown device"
    if _on_gpu(machine) and machine.get("gpu"):
        memory = f", {machine['gpu_memory_gib']} GiB" if machine.get("gpu_memory_gib") else ""
        what = f"{device} ({machine['gpu']}{memory})"
    elif machine.get("cpu"):
        cores = f", {machine['cpu_cores']} cores" if machine.get("cpu_cores") else ""
        what = f"{device} ({machine['cpu']}{cores})"
    else:
        what = str(device)
    when = f" on {str(machine['created'])[:10]}" if machine.get("created") else ""
    version = f", baton {machine['baton']}" if machine.get("baton") else ""
    commit = f" at {machine['git_commit']}" if machine.get("git_commit") else ""
    return f"{what}{when}{version}{commit}"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


# the command line ---------------------------------------------------------------------------------------------------


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``plan`` to a subparsers object (``baton``'s commands); its handler returns the exit status."""
    plan = commands.add_parser(
        "plan", help="replicas, sharing layout and batch limits that meet a target, from a `baton bench serve` result",
        description="Read the throughput and latency `baton bench serve` measured and print the layout of highest "
                    "throughput per device whose p95 meets --p95, the replicas that serve --target-rps, the "
                    "`baton serve` and `baton deploy k8s` flags that run it, and the assumptions it rests on. "
                    "Exit 1 when no measured layout meets --p95.",
    )
    plan.add_argument("--bench", type=Path, required=True, metavar="RESULTS.json",
                      help="serve.json written by `baton bench serve`")
    plan.add_argument("--target-rps", type=float, required=True, metavar="RPS",
                      help="requests/s to serve, all replicas together")
    plan.add_argument("--p95", type=_duration, required=True, metavar="DURATION",
                      help="p95 latency target: 4s, 4.5 (seconds) or 800ms")
    plan.add_argument("--headroom", type=float, default=DEFAULT_HEADROOM,
                      help="plan each replica at this fraction of its measured peak")
    plan.add_argument("--spare", action="store_true", help="add one replica, so losing one still meets the target")
    plan.add_argument("--gpu", default=None,
                      help="GKE accelerator for the `baton deploy k8s` line, e.g. nvidia-h100-80gb")
    plan.add_argument("--json", action="store_true", help="print the plan as JSON, for scripts")
    plan.set_defaults(handler=run_plan)
    return plan


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run_plan(args: argparse.Namespace) -> int:
    """``baton plan``: 0 with a plan, 1 when no measured layout meets ``--p95``. Bad input raises ``ValueError``."""
    from rich.console import Console

    plan = make_plan(load_result(args.bench), args.target_rps, args.p95, args.headroom, args.spare, args.gpu)
    console = Console(highlight=False, soft_wrap=True)
    if args.json:
        console.out(json.dumps(plan.to_json(), indent=2))
    else:
        _print_plan(plan, console)
    if not plan.ok:
        best = plan.best_p95
        Console(stderr=True, highlight=False, soft_wrap=True).print(
            f"baton plan: no measured layout meets `--p95` {plan.p95_target_s:g}s; the best p95 measured is "
            f"{best.p95_s:.3g} s ({best.describe()}, {best.requests_per_s:.3g} requests/s per device). Relax --p95, "
            "or measure a faster setup (a larger GPU, a preset, fewer steps or smaller images).", markup=False)
        return 1
    return 0


def _print_plan(plan: Plan, console) -> None:
    from rich import box
    from rich.table import Table

    console.print(f"[bold]Measured layouts[/] ({plan.shape.describe()}; {plan.machine})")
    table = Table(box=box.SIMPLE_HEAD, caption="per device (a replica is one device); in flight: closed-loop "
                  f"clients per device; meets: p95 <= {plan.p95_target_s:g} s")
    for column in ("mode", "engines", "in flight", "img/s", "req/s", "p50 s", "p95 s", "meets"):
        table.add_column(column, justify="left" if column == "mode" else "right", no_wrap=True)
    for layout in plan.candidates:
        chosen = layout is plan.choice
        table.add_row(layout.mode, str(layout.engines), str(layout.in_flight), f"{layout.images_per_s:.3g}",
                      f"{layout.requests_per_s:.3g}", f"{layout.p50_s:.3g}", f"{layout.p95_s:.3g}",
                      "chosen" if chosen else ("yes" if layout.meets_p95 else "no"),
                      style="bold green" if chosen else None)
    console.print(table)
    for line in plan.skipped:
        console.print(f"left out: {line}", markup=False)
    choice = plan.choice
    if choice is None:
        return
    sizing = f"at {plan.headroom:.0%} headroom"
    if plan.spare:
        sizing = f"{plan.needed} {sizing} + 1 spare"
    console.print(
        f"\n[bold]Plan:[/] {plan.replicas} replica{'s' if plan.replicas != 1 else ''} ({sizing}), one device per "
        f"replica, {choice.describe()}: "
        f"{plan.target_rps:g} requests/s with each replica at {plan.load:.0%} of its measured peak of "
        f"{choice.requests_per_s:.3g} requests/s; p95 measured {choice.p95_s:.3g} s (target {plan.p95_target_s:g} s); "
        f"denoiser up to {plan.max_rows} rows per forward.")
    console.print("\n[bold]baton serve[/] (each replica: one device):")
    console.print(f"  {plan.serve_command}", markup=False)
    for line in plan.unflagged:
        console.print(f"  - not settable by a flag: {line}", markup=False)
    console.print("[bold]baton deploy k8s[/] (one engine per pod):")
    console.print(f"  {plan.deploy_command}", markup=False)
    for line in plan.deploy_notes:
        console.print(f"  - {line}", markup=False)
    console.print("\n[bold]Assumptions[/]")
    for line in plan.assumptions:
        console.print(f"  - {line}", markup=False)
