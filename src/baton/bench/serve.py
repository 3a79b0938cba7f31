"""``baton bench serve``: the same workload against the stacked baseline, baton's staged pipeline with
request-level and with step-level batching, and the batched ceiling, all in one run so machine noise cancels.

Modes:
- ``stacked``: the plain diffusers pipeline, one request at a time (``Engine(mode="stacked")``).
- ``staged``: baton's stages, the denoiser batching at request level (a batch runs to its end before the next).
- ``staged-step``: baton's stages, the denoiser batching at step level (requests join between steps).
- ``batched-ceiling``: one plain diffusers call with all C clients' prompts at once, repeated: the throughput
  no scheduler can beat for C clients on the same hardware (each of its requests waits for the whole call).

The optimization options (``--preset`` and the flags) apply to the staged modes only: ``stacked`` and
``batched-ceiling`` are the plain diffusers pipeline in the same dtype, the baseline they are measured against.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import multiprocessing
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
import torch

from baton.bench.isolation import MEMORY_FIELDS, memory_snapshot
from baton.bench.machine import describe_machine, strict_float32, tf32_settings
from baton.bench.probe import ComponentProbe, Span, profiled_pass
from baton.bench.workload import Outcome, closed_loop, poisson_arrivals
from baton.config import DenoiseConfig, EngineConfig, OptimizationConfig
from baton.device import elapsed_s, mark_now, resolve_device, resolve_dtype
from baton.engine import Engine
from baton.executors import stacked_pipeline
from baton.models import load_model
from baton.request import GenerationRequest
from baton.stage_names import DENOISE, IMAGE_ENCODE, PIPELINE, TEXT_ENCODE, VAE_DECODE

logger = logging.getLogger(__name__)

MODES: tuple[str, ...] = ("stacked", "staged", "staged-step", "batched-ceiling")
STAGED_MODES: tuple[str, ...] = ("staged", "staged-step")
"""The modes that run baton's stages, and so the optimization options."""
BUSY_METHODS: tuple[str, ...] = ("auto", "spans", "profiler")
GPU_PROFILE: dict[str, Any] = {
    "model": "sd15-random", "size": (512, 512), "dtype": "float16", "steps": 25,
    "modes": ("stacked", "staged-step", "batched-ceiling"), "concurrency": (1, 8), "requests": 16, "timeline": False,
}
"""``--profile gpu``: a short, budgeted GPU run (explicit flags override each of these)."""
PROMPTS: tuple[str, ...] = (
    "a red fox in the snow",
    "a lighthouse on a cliff at dusk, oil painting",
    "a bowl of ramen, studio photo",
    "an astronaut riding a horse on mars",
    "a watercolor of a quiet harbor at dawn",
    "a robot reading a newspaper in a cafe",
    "a macro photo of a dew drop on a leaf",
    "a castle made of glass, fantasy art",
    "a cat wearing sunglasses, pop art",
    "a foggy pine forest, 35mm film",
    "an isometric city block at night, neon",
    "a bowl of lemons on a wooden table",
    "a portrait of an old fisherman, charcoal",
    "a snowy mountain village, cinematic",
    "a paper boat on a puddle after rain",
    "a hummingbird drinking from a flower",
)
_TIMELINE_INDEX = 1_000_000  # request indices of the timeline run: away from the measured ones
_CALL_TIMEOUT_S = 3600.0  # one command to a mode's process (loading a model, one load point): a hung one fails


@dataclass(frozen=True, slots=True)
class ServeSettings:
    """What ``baton bench serve`` runs; every field is recorded with the results."""

    model: str = "tiny-sd15"
    modes: tuple[str, ...] = MODES
    concurrency: tuple[int, ...] = (1, 2, 4, 8)
    rates: tuple[float, ...] = ()
    """Poisson arrival rates (requests/s). When given, they replace the closed-loop concurrency sweep."""
    requests: int = 32
    """Measured requests per mode, load point and round."""
    rounds: int = 1
    """Times the whole sweep is repeated, interleaved; rows pool every round (a noisy machine needs several)."""
    steps: int = 20
    width: int = 128
    height: int = 128
    guidance_scale: float | None = None
    device: str = "auto"
    dtype: str = "auto"
    max_rows: int = 16
    warmup: int | None = None
    """Unmeasured requests before each load point; ``None``: one per client (at least 2)."""
    seed: int = 0
    timeline: bool = True
    optimizations: OptimizationConfig = field(default_factory=OptimizationConfig)
    """The options of the staged modes (``--preset`` and the flags); ``stacked`` and ``batched-ceiling`` run the
    plain diffusers pipeline whatever this says."""
    busy_method: str = "auto"
    """How ``denoiser_busy`` is measured: ``profiler``: GPU kernel time inside the denoiser's forwards over the
    wall time of an extra pass under ``torch.profiler`` after each load point (CPU time inside them on a CPU);
    ``spans``: the denoiser's spans (CUDA events around its launches on a GPU) over the measured pass's wall time;
    ``auto``: ``profiler`` on CUDA, ``spans`` on a CPU (where CPU time is the kernel time)."""
    busy_requests: int | None = None
    """Requests of the profiled pass; ``None``: one per client, at least 4 (8 for Poisson arrivals)."""
    profile: str | None = None
    """The ``--profile`` that set the defaults, recorded for the reader."""

    def __post_init__(self) -> None:
        unknown = [mode for mode in self.modes if mode not in MODES]
        if unknown or not self.modes:
            raise ValueError(f"`--modes` must be a comma-separated subset of {list(MODES)}, got {list(self.modes)}")
        if not self.concurrency or any(c < 1 for c in self.concurrency):
            raise ValueError(f"`--concurrency` must be integers >= 1, got {list(self.concurrency)}")
        if any(r <= 0 for r in self.rates):
            raise ValueError(f"`--rate` must be positive numbers, got {list(self.rates)}")
        if self.rates and set(self.modes) == {"batched-ceiling"}:
            raise ValueError("`--rate` needs a mode besides batched-ceiling (open-loop arrivals have no ceiling)")
        if self.requests < 1 or self.steps < 1 or self.rounds < 1:
            raise ValueError(f"`--requests`, `--steps` and `--rounds` must be >= 1, got {self.requests}, "
                             f"{self.steps} and {self.rounds}")
        if self.busy_method not in BUSY_METHODS:
            raise ValueError(f"`--busy-method` must be one of {list(BUSY_METHODS)}, got {self.busy_method!r}")
        if self.busy_requests is not None and self.busy_requests < 1:
            raise ValueError(f"`--busy-requests` must be >= 1, got {self.busy_requests}")
        if self.optimizations != OptimizationConfig() and not set(self.modes) & set(STAGED_MODES):
            raise ValueError(f"`--preset` and the optimization flags apply to the staged modes {list(STAGED_MODES)}; "
                             f"`--modes` has none of them, got {list(self.modes)}")

    def engine_config(self, mode: str) -> EngineConfig:
        """The engine of an engine mode: the staged modes with the options, ``stacked`` without."""
        staged = mode in STAGED_MODES
        return EngineConfig(
            models=(self.model,),
            mode="staged" if staged else "stacked",
            device=self.device,
            dtype=self.dtype,
            denoise=DenoiseConfig(batching="request" if mode == "staged" else "step", max_rows=self.max_rows),
            max_queue=max(256, 2 * self.requests),
            optimizations=self.optimizations if staged else OptimizationConfig(),
        )

    def profiles_busy(self, device_type: str) -> bool:
        """Whether each load point gets the extra pass under ``torch.profiler`` (see :attr:`busy_method`)."""
        return self.busy_method == "profiler" or (self.busy_method == "auto" and device_type == "cuda")

    def busy_requests_for(self, arrival: str, value: float) -> int:
        if self.busy_requests is not None:
            return self.busy_requests
        return max(4, int(value)) if arrival == "closed" else 8

    def request(self, index: int) -> GenerationRequest:
        return GenerationRequest(
            prompt=PROMPTS[index % len(PROMPTS)],
            seed=self.seed + index,
            steps=self.steps,
            width=self.width,
            height=self.height,
            guidance_scale=self.guidance_scale,
        )

    def warmup_for(self, arrival: str, value: float) -> tuple[int, int]:
        """(clients, requests) of the unmeasured closed-loop warm-up before a load point."""
        clients = int(value) if arrival == "closed" else 4
        return clients, self.warmup if self.warmup is not None else max(2, clients)

    def load_points(self) -> list[tuple[str, float]]:
        """(arrival, value) pairs: ("closed", clients) or ("poisson", rate)."""
        if self.rates:
            return [("poisson", rate) for rate in self.rates]
        return [("closed", clients) for clients in self.concurrency]


class _EngineTarget:
    """A baton engine in one of the engine modes."""

    def __init__(self, mode: str, settings: ServeSettings) -> None:
        self.settings = settings
        self.engine = Engine(settings.engine_config(mode))
        self.runner = self.engine.runners[self.engine.default_model]
        # the UNet's hooks for the plain pipeline only: baton's stages call the (maybe compiled) denoiser
        self.probe = ComponentProbe(self.runner, hook_unet=mode == "stacked").__enter__()

    def submit(self, index: int) -> Future:
        return self.engine.submit(self.settings.request(index))

    def drive(self, arrival: str, value: float, total: int, first_index: int) -> list[Outcome]:
        if arrival == "closed":
            return closed_loop(self.submit, int(value), total, first_index)
        return poisson_arrivals(self.submit, value, total, seed=self.settings.seed + first_index,
                                first_index=first_index)

    def close(self) -> None:
        self.probe.__exit__()
        self.engine.close()


class _CeilingTarget:
    """The plain diffusers pipeline called with every client's prompt at once."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        device = resolve_device(settings.device)
        self.runner = load_model(settings.model, device, resolve_dtype(settings.dtype, device))
        self.pipe = stacked_pipeline(self.runner, "default")
        self.probe = ComponentProbe(self.runner).__enter__()

    def drive(self, arrival: str, value: float, total: int, first_index: int) -> list[Outcome]:
        clients = int(value)
        outcomes = []
        end = first_index + total
        for start in range(first_index, end, clients):
            requests = [self.settings.request(i) for i in range(start, min(start + clients, end))]
            first = dataclasses.replace(requests[0], width=self.settings.width, height=self.settings.height,
                                        steps=self.settings.steps, guidance_scale=requests[0].guidance_scale
                                        if requests[0].guidance_scale is not None
                                        else self.runner.default_guidance_scale)
            submitted = time.perf_counter()
            # the family's own call (PixArt: no size binning), with every client's prompt and generator at once
            output = self.pipe(**{**self.runner.pipeline_arguments(first), "prompt": [r.prompt for r in requests]},
                               generator=[torch.Generator("cpu").manual_seed(r.seed) for r in requests])
            finished = time.perf_counter()
            outcomes += [Outcome(submitted, finished, 1) for _ in output.images]
        return outcomes

    def close(self) -> None:
        self.probe.__exit__()


def run_serve(settings: ServeSettings, log: Callable[[str], None] = logger.info) -> dict:
    """Run every mode at every load point; return the report (see ``baton.bench.report`` for its files).

    Each mode lives in its own process. On a CPU this is what makes the comparison fair: libgomp throttles the
    spinning of every OpenMP team in a process once the process holds more pool threads than there are cores,
    and four engines' worker threads in one process made every mode, the plain pipeline included, 3x slower.
    Only one mode works at a time; the others wait on their pipes.
    """
    # 1. refuse options the device cannot honour before any process starts
    device_here = resolve_device(settings.device)
    if set(settings.modes) & set(STAGED_MODES):
        from baton.optim import check_optimizations

        check_optimizations(settings.engine_config("staged-step"), device_here)
    strict_float32(resolve_dtype(settings.dtype, device_here), device_here)  # as every mode's process does
    # 2. start every mode, so loading never overlaps a measurement
    workers: dict[str, _ModeProcess] = {}
    results, timeline, details = [], {}, {}
    # "all prompts at once" has no meaning for open-loop arrivals: no ceiling process then
    modes = [mode for mode in settings.modes if not (mode == "batched-ceiling" and settings.rates)]
    try:
        for mode in modes:
            log(f"loading {settings.model} for {mode}")
            workers[mode] = _ModeProcess(mode, settings)
            details[mode] = workers[mode].call("details")
        device = workers[modes[0]].call("device")
        profiled = settings.profiles_busy(torch.device(device).type)
        # 3. rounds, then load points, then modes innermost: drift in the machine hits every mode alike
        rounds: dict[tuple[str, str, float], list[dict]] = {}
        next_index = 0
        for round_index in range(settings.rounds):
            for arrival, value in settings.load_points():
                for mode, worker in workers.items():
                    measured = worker.call("point", arrival, value, next_index)
                    next_index += settings.warmup_for(arrival, value)[1] + settings.requests
                    next_index += settings.busy_requests_for(arrival, value) if profiled else 0
                    rounds.setdefault((mode, arrival, value), []).append(measured)
                    log(f"round {round_index + 1}/{settings.rounds} {mode:>15} {_point_label(arrival, value):>12}: "
                        f"{measured['images'] / measured['duration_s']:.2f} images/s")
        results = [summarize(mode, arrival, value, measured) for (mode, arrival, value), measured in rounds.items()]
        add_ratios(results)
        # 4. two overlapping requests, stacked against staged: where the time goes
        if settings.timeline:
            for mode in ("stacked", "staged-step"):
                if mode in workers:
                    timeline[mode] = workers[mode].call("timeline")
    finally:
        for worker in workers.values():
            worker.stop()
    return {
        "benchmark": "serve",
        "machine": describe_machine(device),
        "settings": asdict(settings),
        "mode_details": details,
        "results": results,
        "timeline": timeline,
    }


class _ModeProcess:
    """One mode's target in a child process, driven over a pipe: ``call(command, *args)`` returns its answer."""

    def __init__(self, mode: str, settings: ServeSettings, timeout_s: float = _CALL_TIMEOUT_S) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._timeout_s = timeout_s
        self._process = context.Process(target=_serve_mode, args=(mode, settings, child), name=f"bench-{mode}",
                                        daemon=True)
        self._process.start()
        child.close()
        try:
            self.call("ready")
        except BaseException:
            self.stop()
            raise

    def call(self, command: str, *args: Any) -> Any:
        self._conn.send((command, args))
        if not self._conn.poll(self._timeout_s):
            self._process.kill()
            raise TimeoutError(f"the benchmark worker did not answer `{command}` within {self._timeout_s:.0f} s")
        status, answer = self._conn.recv()
        if status == "error":
            raise RuntimeError(f"the benchmark worker failed:\n{answer}")
        return answer

    def stop(self) -> None:
        try:
            self._conn.send(("stop", ()))
        except OSError:
            pass
        self._process.join(timeout=60)
        if self._process.is_alive():
            self._process.kill()


def _serve_mode(mode: str, settings: ServeSettings, conn: Connection) -> None:
    """The child process: build the target, then answer commands until told to stop."""
    logging.basicConfig(level=logging.WARNING)
    try:
        device = resolve_device(settings.device)
        strict_float32(resolve_dtype(settings.dtype, device), device)  # before any model is built
        target = _CeilingTarget(settings) if mode == "batched-ceiling" else _EngineTarget(mode, settings)
    except BaseException:
        conn.send(("error", traceback.format_exc()))
        return
    try:
        while True:
            command, args = conn.recv()
            if command == "stop":
                return
            try:
                conn.send(("ok", _answer(target, settings, command, args)))
            except Exception:
                conn.send(("error", traceback.format_exc()))
    finally:
        target.close()


def _answer(target: _EngineTarget | _CeilingTarget, settings: ServeSettings, command: str, args: tuple) -> Any:
    device = target.runner.device
    cuda = device.type == "cuda"
    if command == "ready":
        return True
    if command == "device":
        return str(device)
    if command == "details":
        return {"dtype": str(target.runner.dtype).removeprefix("torch."), "tf32": tf32_settings(),
                "optimizations": list(target.runner.optimizations), "memory_after_load": memory_snapshot(device)}
    if command == "point":
        arrival, value, first_index = args
        clients, warmup = settings.warmup_for(arrival, value)
        target.drive("closed", clients, warmup, first_index)
        if cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)  # this point's peaks, not the previous point's
        target.probe.take()
        outcomes = target.drive(arrival, value, settings.requests, first_index + warmup)
        if cuda:
            torch.cuda.synchronize(device)
        measured = measure(outcomes, target.probe.take(), device.type)
        measured["memory"] = memory_snapshot(device)
        if settings.profiles_busy(device.type):
            measured["busy_pass"] = busy_pass(target, arrival, value, settings.busy_requests_for(arrival, value),
                                              first_index + warmup + settings.requests)
        return measured
    if command == "timeline":
        return record_timeline(target, device)
    raise ValueError(f"unknown command {command!r}")


def busy_pass(target: _EngineTarget | _CeilingTarget, arrival: str, value: float, total: int,
              first_index: int) -> dict:
    """``total`` more requests at the same load point under ``torch.profiler``: the denoiser's kernel time inside
    its forwards, and the pass's wall time. Throughput and latency come from the unprofiled pass: the profiler
    adds host time to every launch."""
    device = target.runner.device
    target.probe.take()
    with profiled_pass(target.probe, device) as kernels:
        outcomes = target.drive(arrival, value, total, first_index)
    target.probe.take()
    wall = max(o.finished for o in outcomes) - min(o.submitted for o in outcomes)
    images = sum(o.images for o in outcomes if o.error is None)
    return {"requests": total, "images": images, "wall_s": round(wall, 4), "kernel_s": round(kernels["kernel_s"], 4),
            "ranges": kernels["ranges"], "images_per_s": round(images / wall, 4) if wall > 0 else None}


def measure(outcomes: list[Outcome], spans: list[Span], device_type: str = "cpu") -> dict:
    """The raw numbers of one round at one load point (merged over rounds by :func:`summarize`)."""
    served = [o for o in outcomes if o.error is None]
    forwards = [span for span in spans if span.component == DENOISE]
    stages = (TEXT_ENCODE, DENOISE, VAE_DECODE, IMAGE_ENCODE, PIPELINE)
    return {
        "device_type": device_type,
        "requests": len(outcomes),
        "errors": [o.error for o in outcomes if o.error is not None],
        "images": sum(o.images for o in served),
        "duration_s": max(o.finished for o in outcomes) - min(o.submitted for o in outcomes),
        "latencies_s": [o.latency_s for o in served],
        "forwards": len(forwards),
        "rows": sum(span.rows for span in forwards),
        "busy_s": sum(span.seconds for span in forwards),
        "queue_wait_s": {st: [o.timings[st].queue_wait_s for o in served if st in o.timings] for st in stages},
        "run_s": {st: [o.timings[st].run_s for o in served if st in o.timings] for st in stages},
    }


def summarize(mode: str, arrival: str, value: float, rounds: list[dict]) -> dict:
    """One row of the results: throughput, latency percentiles and what the denoiser did, over all rounds."""
    duration = sum(r["duration_s"] for r in rounds)
    latencies = np.array([x for r in rounds for x in r["latencies_s"]] or [math.nan])
    errors = [e for r in rounds for e in r["errors"]]
    forwards = sum(r["forwards"] for r in rounds)

    def mean_by_stage(key: str) -> dict[str, float]:
        merged = {stage: [x for r in rounds for x in r[key][stage]] for stage in rounds[0][key]}
        return {stage: round(float(np.mean(values)), 4) for stage, values in merged.items() if values}

    return {
        "mode": mode,
        "concurrency": int(value) if arrival == "closed" else None,
        "rate": value if arrival == "poisson" else None,
        "arrival": arrival,
        "rounds": len(rounds),
        "requests": sum(r["requests"] for r in rounds),
        "failed": len(errors),
        "errors": sorted(set(errors))[:5],
        "images": sum(r["images"] for r in rounds),
        "duration_s": round(duration, 4),
        "images_per_s": round(sum(r["images"] for r in rounds) / duration, 4),
        "images_per_s_by_round": [round(r["images"] / r["duration_s"], 4) for r in rounds],
        "p50_s": round(float(np.percentile(latencies, 50)), 4),
        "p95_s": round(float(np.percentile(latencies, 95)), 4),
        "p99_s": round(float(np.percentile(latencies, 99)), 4),
        "mean_s": round(float(latencies.mean()), 4),
        "denoiser_forwards": forwards,
        "denoiser_rows_per_forward": round(sum(r["rows"] for r in rounds) / forwards, 2) if forwards else None,
        **denoiser_busy(rounds, duration),
        "queue_wait_s": mean_by_stage("queue_wait_s"),
        "stage_run_s": mean_by_stage("run_s"),
        **merge_memory([r.get("memory") or {} for r in rounds]),
    }


def denoiser_busy(rounds: list[dict], duration: float) -> dict:
    """``denoiser_busy`` and how it was measured: kernel time over the profiled passes' wall time where every
    round has one, else the spans of the measured passes over their wall time."""
    cuda = rounds[0].get("device_type") == "cuda"
    spans = round(sum(r["busy_s"] for r in rounds) / duration, 4)
    passes = [r.get("busy_pass") for r in rounds]
    row: dict[str, Any] = {"denoiser_busy": spans, "denoiser_busy_method": "cuda-event-spans" if cuda else "cpu-spans",
                           "denoiser_busy_spans": spans, "busy_pass": None}
    if not passes or any(p is None for p in passes):
        return row
    wall = sum(p["wall_s"] for p in passes)
    kernel = sum(p["kernel_s"] for p in passes)
    images = sum(p["images"] for p in passes)
    row["busy_pass"] = {"requests": sum(p["requests"] for p in passes), "images": images, "wall_s": round(wall, 4),
                        "kernel_s": round(kernel, 4), "ranges": sum(p["ranges"] for p in passes),
                        "images_per_s": round(images / wall, 4) if wall > 0 else None}
    if kernel <= 0 and sum(r["forwards"] for r in rounds) > 0:
        # the denoiser ran, yet no kernel was attributed to it: a profiler without CUDA activity, say
        logger.warning("the profiled pass attributed no time to the denoiser's forwards; denoiser_busy falls back "
                       "to the spans")
        row["denoiser_busy_method"] += " (the profiler attributed no kernels)"
        return row
    row["denoiser_busy"] = round(kernel / wall, 4) if wall > 0 else None
    row["denoiser_busy_method"] = "cuda-kernels" if cuda else "cpu-profiler"
    return row


def merge_memory(snapshots: list[dict]) -> dict[str, float | None]:
    """One row's memory over its rounds: the highest peaks, the least free device memory."""
    merged: dict[str, float | None] = {}
    for name in MEMORY_FIELDS:
        values = [s[name] for s in snapshots if s.get(name) is not None]
        pick = min if name == "device_free_gb" else max
        merged[name] = pick(values) if values else None
    return merged


def add_ratios(results: list[dict]) -> None:
    """Throughput relative to stacked and to the batched ceiling at the same load point."""
    def point(row: dict) -> tuple:
        return row["arrival"], row["concurrency"], row["rate"]

    by_mode = {(row["mode"], point(row)): row for row in results}
    for row in results:
        for reference, key in (("stacked", "vs_stacked"), ("batched-ceiling", "vs_ceiling")):
            other = by_mode.get((reference, point(row)))
            row[key] = round(row["images_per_s"] / other["images_per_s"], 3) if other else None


def record_timeline(target: _EngineTarget, device: torch.device) -> dict:
    """Request 2 arrives a third of the way into request 1: when does each stage run, and when is each done?"""
    alone = target.drive("closed", 1, 1, _TIMELINE_INDEX)[0].latency_s
    offset = alone / 3
    target.probe.take()
    origin = mark_now(device)
    finished: list[float] = [0.0, 0.0]
    done = [threading.Event(), threading.Event()]
    submitted = []
    futures = []

    def on_done(_: Future, i: int) -> None:
        finished[i] = time.perf_counter()
        done[i].set()  # result() may return before done-callbacks run: wait for this instead

    for i in range(2):
        if i:
            time.sleep(offset)
        submitted.append(time.perf_counter())
        future = target.submit(_TIMELINE_INDEX + 1 + i)
        future.add_done_callback(lambda f, i=i: on_done(f, i))
        futures.append(future)
    for future, event in zip(futures, done):
        future.result()
        event.wait()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    spans = target.probe.take()
    return {
        "requests": [
            {"name": f"request {i + 1}", "submitted_s": round(submitted[i] - origin.wall, 5),
             "finished_s": round(finished[i] - origin.wall, 5)}
            for i in range(2)
        ],
        "spans": [
            {"component": s.component, "start_s": round(elapsed_s(origin, s.start), 5),
             "end_s": round(elapsed_s(origin, s.end), 5), "rows": s.rows}
            for s in spans
        ],
    }


def _point_label(arrival: str, value: float) -> str:
    return f"{int(value)} client{'s' if int(value) != 1 else ''}" if arrival == "closed" else f"{value:g} req/s"
