"""``baton bench scale``: engine processes behind the router, measured against one engine, in one run.

Three parts:

1. **Router overhead.** One engine process; the same small request sent to it directly (its
   :class:`~baton.cluster.RemoteEngine`) and through the :class:`~baton.cluster.Router`, alternately, one at a
   time. The p50 difference is what the router adds. The in-process engine's p50 for the same request is the
   reference for what the process hop itself costs.
2. **Throughput.** Closed-loop clients against each layout: the engine in this process, and K engine processes
   with T intra-op threads each on one device (``KxT``). Rows have the shape of ``bench serve`` rows (``mode``,
   ``concurrency``, ``images_per_s``, ``p95_s``, plus ``engines`` and ``threads``), so ``baton plan`` reads them.
3. **kill -9 under load.** Two engine processes under closed-loop load; one is killed mid-run. Every request
   must end in a result or a clear error (the counts add up: nothing is lost silently), and the killed engine
   must be serving again within 30 s.
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from baton.bench.machine import describe_machine
from baton.bench.workload import HUNG, Outcome, closed_loop
from baton.cluster import Router
from baton.config import EngineConfig
from baton.engine import Engine
from baton.request import GenerationRequest

logger = logging.getLogger(__name__)

IN_PROCESS = "in-process"
KILL_BACK_TARGET_S = 30.0
OVERHEAD_TARGET_MS = 2.0
SPEEDUP_TARGET = 1.6
RESULT_DEADLINE_S = 120.0
"""A request of the kill run not settled this long after it was sent counts as lost silently."""


@dataclass(frozen=True, slots=True)
class ScaleSettings:
    """What ``baton bench scale`` runs; recorded with the results."""

    model: str = "tiny-sd15"
    device: str = "cpu"
    layouts: tuple[str, ...] = (IN_PROCESS, "1x1", "2x1", "1x2")
    """``in-process`` (one Engine in the bench's process, torch's default threads) or ``KxT``: K engine processes
    on ``device`` with T intra-op threads each (``K``: the router's default threads)."""
    concurrency: int = 8
    requests: int = 32
    """Measured requests per layout and round."""
    rounds: int = 3
    """Rounds, interleaved across layouts, pooled per layout."""
    steps: int = 20
    width: int = 128
    height: int = 128
    overhead_pairs: int = 100
    """Requests sent directly and through the router (each), for the overhead."""
    kill_requests: int = 64
    kill_after_s: float = 1.5
    seed: int = 0

    def __post_init__(self) -> None:
        for layout in self.layouts:
            parse_layout(layout)
        for name in ("concurrency", "requests", "rounds", "steps", "overhead_pairs", "kill_requests"):
            if getattr(self, name) < 1:
                raise ValueError(f"`--{name.replace('_', '-')}` must be >= 1, got {getattr(self, name)!r}")

    def engine_config(self) -> EngineConfig:
        return EngineConfig(models=(self.model,), device=self.device)

    def request(self, index: int) -> GenerationRequest:
        return GenerationRequest(prompt=f"a red circle, number {index}", steps=self.steps, width=self.width,
                                 height=self.height, seed=self.seed + index)


def parse_layout(text: str) -> tuple[int, int | None] | None:
    """``"2x1"`` → (2, 1); ``"4"`` → (4, None); ``"in-process"`` → ``None``. Raises naming ``--layouts``."""
    if text == IN_PROCESS:
        return None
    processes, _, threads = text.partition("x")
    if processes.isdigit() and int(processes) >= 1 and (not threads or (threads.isdigit() and int(threads) >= 1)):
        return int(processes), int(threads) if threads else None
    raise ValueError(f"`--layouts` entries are `in-process`, K or KxT (K engine processes, T threads each), got "
                     f"{text!r}")


def run_scale(settings: ScaleSettings, log: Callable[[str], None] = logger.info) -> dict:
    """Run the three parts; the report (``results`` rows, ``overhead``, ``kill``)."""
    report = {"benchmark": "scale", "machine": describe_machine(settings.device), "settings": asdict(settings)}
    log("1/3 router overhead")
    report["overhead"] = measure_overhead(settings)
    log(f"    direct p50 {report['overhead']['direct_p50_ms']:.2f} ms, routed "
        f"{report['overhead']['routed_p50_ms']:.2f} ms: +{report['overhead']['overhead_p50_ms']:.3f} ms")
    log("2/3 throughput by layout")
    report["results"] = measure_layouts(settings, log)
    log("3/3 kill -9 under load")
    report["kill"] = measure_kill(settings)
    log(f"    {report['kill']['served']} served, {report['kill']['lost_started']} lost while denoising, "
        f"{report['kill']['lost_silently']} lost silently; back in {report['kill']['back_after_s']} s")
    report["checks"] = checks(report)
    return report


def measure_overhead(settings: ScaleSettings) -> dict:
    small = GenerationRequest(prompt="a blue square", steps=2, width=64, height=64, seed=settings.seed)
    with Engine(settings.engine_config()) as engine:
        for _ in range(5):
            engine.generate(small)
        in_process = [_timed(lambda: engine.submit(small)) for _ in range(settings.overhead_pairs)]
    with Router(settings.engine_config(), [settings.device], threads_per_engine=1) as router:
        engine = router.engines[0]
        request = router.resolve(small)
        for _ in range(5):
            router.submit(request).result()
        direct, routed = [], []
        for _ in range(settings.overhead_pairs):  # alternately, so drift in the machine hits both alike
            direct.append(_timed(lambda: engine.submit(request)))
            routed.append(_timed(lambda: router.submit(request)))
    return {
        "request": {"steps": 2, "width": 64, "height": 64},
        "pairs": settings.overhead_pairs,
        "in_process_p50_ms": _ms(statistics.median(in_process)),
        "direct_p50_ms": _ms(statistics.median(direct)),
        "routed_p50_ms": _ms(statistics.median(routed)),
        "overhead_p50_ms": _ms(statistics.median(routed) - statistics.median(direct)),
        "overhead_mean_ms": _ms(statistics.fmean(routed) - statistics.fmean(direct)),
        "process_hop_p50_ms": _ms(statistics.median(direct) - statistics.median(in_process)),
    }


def measure_layouts(settings: ScaleSettings, log: Callable[[str], None]) -> list[dict]:
    # every layout loads once and idles while the others run: the rounds interleave, so drift hits all alike
    targets = {layout: _start_layout(settings, layout) for layout in settings.layouts}
    pooled: dict[str, list[tuple[list[Outcome], float]]] = {layout: [] for layout in settings.layouts}
    try:
        for target in targets.values():  # warm-up: one request per client
            closed_loop(lambda i, target=target: target.submit(target.resolve(settings.request(i))),
                        settings.concurrency, settings.concurrency, first_index=10**6)
        for round_index in range(settings.rounds):
            for layout, target in targets.items():
                first = round_index * settings.requests
                started = time.perf_counter()
                outcomes = closed_loop(lambda i, target=target: target.submit(target.resolve(settings.request(i))),
                                       settings.concurrency, settings.requests, first_index=first)
                pooled[layout].append((outcomes, time.perf_counter() - started))
                log(f"    round {round_index + 1} {layout}: "
                    f"{sum(o.images for o in outcomes) / pooled[layout][-1][1]:.2f} images/s")
    finally:
        for target in targets.values():
            target.close()
    rows = [_row(settings, layout, runs) for layout, runs in pooled.items()]
    base = next((row for row in rows if row["layout"] == "1x1"), None)
    for row in rows:
        row["vs_one_process"] = round(row["images_per_s"] / base["images_per_s"], 3) if base else None
    return rows


def measure_kill(settings: ScaleSettings) -> dict:
    with Router(settings.engine_config(), [settings.device] * 2, threads_per_engine=1) as router:
        for engine in router.engines:
            engine.wait_ready()
        victim = router.engines[0]
        killed: dict[str, float] = {}

        def kill_later() -> None:
            time.sleep(settings.kill_after_s)
            killed["at"] = time.monotonic()
            victim.kill()
            while router.engines[0] is victim or not router.engines[0].ready:
                time.sleep(0.05)
            killed["back"] = time.monotonic()

        killer = threading.Thread(target=kill_later, daemon=True)
        killer.start()
        outcomes = closed_loop(lambda i: router.submit(router.resolve(settings.request(i))), settings.concurrency,
                               settings.kill_requests, deadline_s=RESULT_DEADLINE_S)
        killer.join(KILL_BACK_TARGET_S * 4)
        retried = router.retried
    errors = [outcome.error for outcome in outcomes if outcome.error and not outcome.error.startswith(HUNG)]
    back = killed.get("back")
    return {
        "requests": settings.kill_requests,
        "served": sum(1 for outcome in outcomes if outcome.error is None),
        "lost_started": sum(1 for error in errors if "while denoising" in error),
        "errors": dict(Counter(error.split(":")[0] for error in errors)),
        "retried": retried,
        # a request that never settled, or never came back at all, was lost silently
        "lost_silently": settings.kill_requests - len(outcomes) + sum(
            1 for outcome in outcomes if outcome.error and outcome.error.startswith(HUNG)),
        "back_after_s": round(back - killed["at"], 2) if back is not None and "at" in killed else None,
        "error_messages": sorted(set(errors))[:5],
    }


def checks(report: dict) -> list[dict]:
    """The issue's targets, each with the value measured."""
    rows = {row["layout"]: row for row in report["results"]}
    found = []
    overhead = report["overhead"]["overhead_p50_ms"]
    found.append({"check": f"router overhead p50 <= {OVERHEAD_TARGET_MS} ms", "value": f"{overhead:.3f} ms",
                  "met": overhead <= OVERHEAD_TARGET_MS})
    if "1x1" in rows and "2x1" in rows:
        speedup = rows["2x1"]["images_per_s"] / rows["1x1"]["images_per_s"]
        found.append({"check": f"2 processes x 1 thread >= {SPEEDUP_TARGET}x 1 process x 1 thread",
                      "value": f"{speedup:.2f}x", "met": speedup >= SPEEDUP_TARGET})
    kill = report["kill"]
    found.append({"check": "kill -9 under load: nothing lost silently", "value": f"{kill['lost_silently']} lost",
                  "met": kill["lost_silently"] == 0 and kill["served"] + sum(kill["errors"].values())
                  == kill["requests"]})
    back = kill["back_after_s"]
    found.append({"check": f"kill -9: serving again within {KILL_BACK_TARGET_S:g} s", "value": f"{back} s",
                  "met": back is not None and back <= KILL_BACK_TARGET_S})
    return found


def _start_layout(settings: ScaleSettings, layout: str):
    parsed = parse_layout(layout)
    if parsed is None:
        return Engine(settings.engine_config())  # resolve, submit and close, as a router has
    processes, threads = parsed
    router = Router(settings.engine_config(), [settings.device], replicas_per_device=processes,
                    threads_per_engine=threads)
    for engine in router.engines:  # all loaded before anything is measured
        engine.wait_ready()
    return router


def _row(settings: ScaleSettings, layout: str, runs: list[tuple[list[Outcome], float]]) -> dict:
    outcomes = [outcome for run, _ in runs for outcome in run]
    served = [outcome for outcome in outcomes if outcome.error is None]
    latencies = np.array([outcome.latency_s for outcome in served]) if served else np.array([np.nan])
    duration = sum(seconds for _, seconds in runs)
    parsed = parse_layout(layout)
    return {
        "mode": "staged-step",
        "layout": layout,
        "engines": 1 if parsed is None else parsed[0],
        "threads": None if parsed is None else parsed[1],
        "devices": 1,
        "concurrency": settings.concurrency,
        "rate": None,
        "arrival": "closed",
        "rounds": len(runs),
        "requests": len(outcomes),
        "failed": len(outcomes) - len(served),
        "errors": sorted({outcome.error for outcome in outcomes if outcome.error})[:3],
        "images": sum(outcome.images for outcome in served),
        "duration_s": round(duration, 3),
        "images_per_s": round(sum(outcome.images for outcome in served) / duration, 4),
        "images_per_s_by_round": [round(sum(o.images for o in run if o.error is None) / seconds, 4)
                                  for run, seconds in runs],
        "p50_s": round(float(np.percentile(latencies, 50)), 4),
        "p95_s": round(float(np.percentile(latencies, 95)), 4),
        "p99_s": round(float(np.percentile(latencies, 99)), 4),
    }


def _timed(submit: Callable) -> float:
    started = time.perf_counter()
    submit().result()
    return time.perf_counter() - started


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)
