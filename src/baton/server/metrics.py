"""Prometheus metrics (prometheus-client), one registry per app.

Counted as requests happen: requests by endpoint and status, latency, images, cancellations (client gone,
timeout), and each finished request's per-stage queue wait, run time and denoiser batch. Read at scrape time from
the engine: pending requests, queue depth per stage, requests denoising, images per second over the last minute,
prompt-cache hits and misses, device memory.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from baton.protocol import EngineClient
from baton.request import GenerationResult
from baton.stage_names import DENOISE

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300)
_STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)
THROUGHPUT_WINDOW_S = 60.0


class ServerMetrics:
    def __init__(self, engine: Callable[[], EngineClient | None]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("baton_requests", "HTTP requests answered, by endpoint and status code",
                                ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram("baton_request_latency_seconds", "Time to answer a generation request",
                                 ["endpoint"], buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.images = Counter("baton_images", "Images generated", registry=self.registry)
        self.cancelled = Counter("baton_requests_cancelled", "Requests whose remaining work was dropped",
                                 ["reason"], registry=self.registry)
        self.queue_wait = Histogram("baton_stage_queue_wait_seconds", "Wait in a stage's queue, per request",
                                    ["stage"], buckets=_STAGE_BUCKETS, registry=self.registry)
        self.stage_run = Histogram("baton_stage_run_seconds", "A stage's run time for a request's batch",
                                   ["stage"], buckets=_STAGE_BUCKETS, registry=self.registry)
        self.denoiser_batch = Histogram("baton_denoiser_batch_images", "Mean images per denoiser forward a request "
                                        "shared", buckets=_BATCH_BUCKETS, registry=self.registry)
        self._throughput = ThroughputWindow(THROUGHPUT_WINDOW_S)
        self.registry.register(_EngineCollector(engine, self._throughput))

    def observe_result(self, result: GenerationResult) -> None:
        images = result.num_images
        self.images.inc(images)
        self._throughput.add(images)
        for stage, timing in result.timings.items():
            self.queue_wait.labels(stage).observe(timing.queue_wait_s)
            self.stage_run.labels(stage).observe(timing.run_s)
        if DENOISE in result.timings:
            self.denoiser_batch.observe(result.timings[DENOISE].batch_images)

    def images_per_second(self) -> float:
        return self._throughput.rate()


class ThroughputWindow:
    """Images finished over the last ``window_s`` seconds, as a rate."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._events: collections.deque[tuple[float, int]] = collections.deque()
        self._lock = threading.Lock()
        self._started = time.monotonic()

    def add(self, count: int) -> None:
        now = time.monotonic()
        with self._lock:
            self._events.append((now, count))
            self._trim(now)  # bounded even if nobody ever asks for the rate

    def rate(self) -> float:
        now = time.monotonic()
        with self._lock:
            self._trim(now)
            total = sum(count for _, count in self._events)
        return total / min(self.window_s, max(now - self._started, 1e-3))

    def _trim(self, now: float) -> None:
        while self._events and self._events[0][0] < now - self.window_s:
            self._events.popleft()


class _EngineCollector(Collector):
    """Gauges read from the engine's ``stats()`` and ``health()`` at scrape time (nothing else of it)."""

    def __init__(self, engine: Callable[[], EngineClient | None], throughput: ThroughputWindow) -> None:
        self._engine = engine
        self._throughput = throughput

    def collect(self) -> Iterator:
        rate = GaugeMetricFamily("baton_images_per_second", f"Images per second over the last "
                                 f"{THROUGHPUT_WINDOW_S:g} s")
        rate.add_metric([], self._throughput.rate())
        yield rate
        engine = self._engine()
        if engine is None:
            return
        stats = engine.stats()
        pending = GaugeMetricFamily("baton_pending_requests", "Requests admitted and not finished")
        pending.add_metric([], stats["pending"])
        yield pending
        work = GaugeMetricFamily("baton_queued_pixel_steps", "Work admitted and not finished: images x width x "
                                 "height x steps, summed over the pending requests")
        work.add_metric([], stats["queued_pixel_steps"])
        yield work
        stalled = GaugeMetricFamily("baton_stalled_seconds", "Seconds since any stage finished work (a denoising "
                                    "step, a batch) while requests wait; 0 when idle (the watchdog's reading)")
        stalled.add_metric([], engine.health().stalled_s)
        yield stalled
        depth = GaugeMetricFamily("baton_queue_depth", "Requests waiting in each stage's queue", labels=["stage"])
        for stage, queued in stats["queued"].items():
            depth.add_metric([stage], queued)
        yield depth
        if stats["denoising"] is not None:
            running = GaugeMetricFamily("baton_denoising_requests", "Requests in the denoiser's running batch")
            running.add_metric([], stats["denoising"])
            yield running
        engines = stats.get("engines")
        # per engine: an engine process that restarts starts its counts at 0, which a sum would show as a drop
        hits = CounterMetricFamily("baton_prompt_cache_hits", "Prompt-embedding cache hits",
                                   labels=["model", "engine"])
        misses = CounterMetricFamily("baton_prompt_cache_misses", "Prompt-embedding cache misses",
                                     labels=["model", "engine"])
        for engine_name, caches in ([("0", stats["prompt_cache"])] if engines is None
                                    else [(each["name"], each["prompt_cache"]) for each in engines]):
            for name, cache in caches.items():
                hits.add_metric([name, engine_name], cache["hits"])
                misses.add_metric([name, engine_name], cache["misses"])
        yield hits
        yield misses
        memory = GaugeMetricFamily("baton_device_memory_bytes", "Memory in use on an engine's device (CUDA: "
                                   "allocated by torch; CPU: the engine process's resident set)",
                                   labels=["device", "engine"])
        if engines is None:  # one engine, in this process
            memory.add_metric([stats["memory"]["device"], "0"], stats["memory"]["bytes"])
        else:
            for each in engines:
                if each.get("memory"):
                    memory.add_metric([each["memory"]["device"], each["name"]], each["memory"]["bytes"])
        yield memory
        if engines is not None:
            yield from _per_engine(engines)


def _per_engine(engines: list[dict]) -> Iterator:
    """A router's engines, one series each, labelled ``engine`` (``index:device``)."""
    up = GaugeMetricFamily("baton_engine_up", "1 while the engine process is ready for work, else 0 (starting, "
                           "restarting, stuck or closed)", labels=["engine", "state"])
    pending = GaugeMetricFamily("baton_engine_pending_requests", "Requests an engine holds", labels=["engine"])
    work = GaugeMetricFamily("baton_engine_queued_pixel_steps", "Work an engine holds, in pixel-steps (what the "
                             "router balances)", labels=["engine"])
    restarts = CounterMetricFamily("baton_engine_restarts", "Times an engine process was restarted after it died",
                                   labels=["engine"])
    for each in engines:
        up.add_metric([each["name"], each["state"]], 1.0 if each["state"] == "ready" else 0.0)
        pending.add_metric([each["name"]], each["pending"])
        work.add_metric([each["name"]], each["queued_pixel_steps"])
        restarts.add_metric([each["name"]], each["restarts"])
    yield from (up, pending, work, restarts)
