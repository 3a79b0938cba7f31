"""``baton bench load`` (and ``benchmarks/load.py``): the HTTP server under overload, on loopback.

For each mode (baton's staged engine, and the stacked diffusers baseline), a ``baton serve`` process starts with
a bounded queue. Its capacity is measured first (C closed-loop clients, requests per second). Then requests arrive
open-loop, at exponentially distributed gaps, at ``overload`` times the staged server's capacity, for
``duration_s`` seconds: the same offered load for both modes. Every request ends as accepted (200), rejected
(429: the queue was full) or failed (anything else, or no answer); the counts must add up to what was sent.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from baton.bench.machine import describe_machine

logger = logging.getLogger(__name__)

MODES: tuple[str, ...] = ("staged", "stacked")


@dataclass(frozen=True, slots=True)
class LoadSettings:
    model: str = "tiny-sd15"
    modes: tuple[str, ...] = MODES
    steps: int = 20
    width: int = 128
    height: int = 128
    max_queue: int = 16
    duration_s: float = 60.0
    overload: float = 2.0
    """Offered load, as a multiple of the staged server's measured capacity."""
    capacity_clients: int = 8
    capacity_s: float = 10.0
    request_timeout_s: float = 120.0
    device: str = "auto"
    seed: int = 0

    def body(self, index: int) -> dict:
        return {"prompt": f"load test request {index}", "steps": self.steps, "width": self.width,
                "height": self.height, "seed": index}


def run_load(settings: LoadSettings, log=logger.info) -> dict:
    results, capacity = [], None
    for mode in settings.modes:
        with _Server(settings, mode) as url:
            measured = asyncio.run(_capacity(url, settings))
            log(f"{mode}: capacity {measured:.2f} requests/s ({settings.capacity_clients} closed-loop clients)")
            if capacity is None:  # the first mode's capacity sets the offered load for all
                capacity = measured
            rate = settings.overload * capacity
            log(f"{mode}: {settings.duration_s:.0f} s of Poisson arrivals at {rate:.2f} requests/s")
            outcomes = asyncio.run(_open_loop(url, settings, rate))
            metrics = httpx.get(f"{url}/metrics", timeout=10).text
        row = summarize(mode, outcomes, settings, measured, rate)
        row["server_cancelled"] = _metric_sum(metrics, "baton_requests_cancelled_total")
        log(f"{mode}: {row['sent']} sent, {row['accepted']} accepted, {row['rejected']} rejected, "
            f"{row['failed']} failed; p95 {row['p95_s']} s")
        results.append(row)
    return {"benchmark": "load", "settings": asdict(settings), "machine": describe_machine(settings.device),
            "results": results}


def summarize(mode: str, outcomes: list[tuple[float, float, int | str]], settings: LoadSettings, capacity: float,
              rate: float) -> dict[str, Any]:
    """``outcomes``: (sent at, latency s, status code or error name) per request."""
    accepted = [latency for _, latency, status in outcomes if status == 200]
    rejected = sum(1 for _, _, status in outcomes if status == 429)
    failed = len(outcomes) - len(accepted) - rejected
    percentile = (lambda q: round(float(np.percentile(accepted, q)), 4) if accepted else None)  # noqa: E731
    return {
        "mode": mode,
        # significant digits, not decimals: on a slow machine the capacity is ~0.1 req/s, where 3 decimals
        # would be a 0.5% error and the offered rate would no longer read as exactly N x the capacity
        "capacity_rps": float(f"{capacity:.6g}"),
        "offered_rps": float(f"{rate:.6g}"),
        "sent": len(outcomes),
        "accepted": len(accepted),
        "rejected": rejected,
        "failed": failed,
        "failures": sorted({str(status) for _, _, status in outcomes if status not in (200, 429)}),
        "accepted_rps": round(len(accepted) / settings.duration_s, 3),
        "p50_s": percentile(50),
        "p95_s": percentile(95),
        "p99_s": percentile(99),
        "timeline": [(round(sent, 3), round(latency, 4), status) for sent, latency, status in outcomes],
    }


async def _capacity(url: str, settings: LoadSettings) -> float:
    """Requests per second with ``capacity_clients`` closed-loop clients, after one warm-up request each."""
    async with httpx.AsyncClient(base_url=url, timeout=settings.request_timeout_s) as client:
        await asyncio.gather(*(client.post("/v1/generate", json=settings.body(-1 - i))
                               for i in range(settings.capacity_clients)))
        done, stop_at = 0, time.perf_counter() + settings.capacity_s
        started = time.perf_counter()

        async def loop(worker: int) -> None:
            nonlocal done
            index = worker * 1_000_000
            while time.perf_counter() < stop_at:
                response = await client.post("/v1/generate", json=settings.body(index))
                index += 1
                done += response.status_code == 200

        await asyncio.gather(*(loop(worker) for worker in range(settings.capacity_clients)))
        return done / (time.perf_counter() - started)


async def _open_loop(url: str, settings: LoadSettings, rate: float) -> list[tuple[float, float, int | str]]:
    rng = random.Random(settings.seed)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    outcomes: list[tuple[float, float, int | str]] = []
    async with httpx.AsyncClient(base_url=url, timeout=settings.request_timeout_s, limits=limits) as client:

        async def one(index: int, sent_at: float) -> None:
            try:
                response = await client.post("/v1/generate", json=settings.body(index))
                status: int | str = response.status_code
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            outcomes.append((sent_at, time.perf_counter() - start - sent_at, status))

        start = time.perf_counter()
        tasks, index, next_at = [], 0, rng.expovariate(rate)
        while next_at < settings.duration_s:
            await asyncio.sleep(max(0.0, next_at - (time.perf_counter() - start)))
            tasks.append(asyncio.create_task(one(index, next_at)))
            index += 1
            next_at += rng.expovariate(rate)
        await asyncio.gather(*tasks)  # every request ends: an answer, or the client's timeout
    return sorted(outcomes)


def _metric_sum(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


class _Server:
    """``baton serve`` in a child process on a free loopback port, ready when ``/readyz`` says so."""

    def __init__(self, settings: LoadSettings, mode: str) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.command = [sys.executable, "-m", "baton.cli", "serve", "--model", settings.model, "--port",
                        str(self.port), "--max-queue", str(settings.max_queue), "--device", settings.device,
                        "--mode", mode, "--request-timeout", str(settings.request_timeout_s)]

    def __enter__(self) -> str:
        self.process = subprocess.Popen(self.command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                        env={**os.environ, "HF_HUB_OFFLINE": "1"})
        url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 600
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"baton serve exited: {self.process.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError("baton serve did not get ready in 600 s")
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    return url
            except httpx.TransportError:
                pass
            time.sleep(0.2)

    def __exit__(self, *exc_info) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()


def load_markdown(report: dict) -> str:
    settings, machine = report["settings"], report["machine"]
    lines = [
        f"### baton bench load: `{settings['model']}` {settings['width']}x{settings['height']}, {settings['steps']} "
        f"steps, queue {settings['max_queue']}, {settings['duration_s']:.0f} s at {settings['overload']:g}× the "
        f"staged capacity, on loopback ({machine.get('gpu') or machine.get('cpu')})",
        "",
        f"torch {machine['torch']}; {machine['created']}; `{machine['command']}`",
        "",
        "| mode | capacity req/s | offered req/s | sent | accepted (200) | rejected (429) | failed | accepted req/s "
        "| p50 s | p95 s | p99 s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["results"]:
        lines.append(
            f"| {row['mode']} | {row['capacity_rps']:.2f} | {row['offered_rps']:.2f} | {row['sent']} "
            f"| {row['accepted']} | {row['rejected']} | {row['failed']} | {row['accepted_rps']:.2f} "
            f"| {_num(row['p50_s'])} | {_num(row['p95_s'])} | {_num(row['p99_s'])} |"
        )
    return "\n".join(lines) + "\n"


def plot_load(report: dict, path: Path) -> None:
    from baton.bench.report import _pyplot

    plt = _pyplot()
    rows = report["results"]
    figure, axes = plt.subplots(1, len(rows), figsize=(6 * len(rows), 4), sharey=True, squeeze=False)
    colours = {200: "#2ca02c", 429: "#ff7f0e"}
    for axis, row in zip(axes[0], rows):
        for status, label in ((200, "accepted"), (429, "rejected")):
            points = [(sent, latency) for sent, latency, code in row["timeline"] if code == status]
            if points:
                axis.scatter(*zip(*points), s=6, color=colours[status], label=f"{label} ({len(points)})")
        failed = [(sent, latency) for sent, latency, code in row["timeline"] if code not in (200, 429)]
        if failed:
            axis.scatter(*zip(*failed), s=10, color="#d62728", marker="x", label=f"failed ({len(failed)})")
        axis.set_title(f"{row['mode']}: {row['offered_rps']:.1f} req/s offered, capacity {row['capacity_rps']:.1f}")
        axis.set_xlabel("sent at (s)")
        axis.legend(fontsize=8)
    axes[0][0].set_ylabel("latency (s)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"
