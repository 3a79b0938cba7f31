"""Running one benchmark row in a fresh process, so its peak memory and thread pools are its own."""

from __future__ import annotations

import multiprocessing
import resource
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from baton.config import EngineConfig


def run_isolated(function: Callable[..., dict[str, Any]], *args: Any, timeout_s: float) -> dict[str, Any]:
    """``function(*args)`` in a spawned process; a crash or hang there is a ``failed`` row, not a failed table."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        future = pool.submit(function, *args)
        try:
            return future.result(timeout=timeout_s)
        except Exception as exc:  # the worker died or hung: the row failed, the table goes on
            for process in list(getattr(pool, "_processes", {}).values()):
                process.kill()
            return {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"}


def start_engine(config: EngineConfig) -> tuple[Any, float, dict[str, Any] | None]:
    """In a row's process: ``(engine, seconds to ready, None)``, or ``(None, 0.0, row)`` where the engine did not
    start: a ``skipped`` row when it refused an option for this device, a ``failed`` one for any other error."""
    from baton.engine import Engine

    started = time.perf_counter()
    try:
        engine = Engine(config)
    except ValueError as exc:  # the engine refused an option for this device: the row does not apply
        return None, 0.0, {"status": "skipped", "reason": str(exc)}
    except Exception:
        return None, 0.0, {"status": "failed", "reason": traceback.format_exc()}
    return engine, time.perf_counter() - started, None


def refusal(config: EngineConfig, device) -> str | None:
    """The engine's reason for refusing ``config`` on ``device``, found without starting a process."""
    from baton.optim import check_optimizations

    try:
        check_optimizations(config, device)
    except ValueError as exc:
        return str(exc)
    return None


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


MEMORY_FIELDS: tuple[str, ...] = ("peak_allocated_gb", "peak_reserved_gb", "device_free_gb", "device_total_gb",
                                  "peak_rss_gb")


def memory_snapshot(device) -> dict[str, float | None]:
    """This process's memory, in GB (1e9 bytes): on CUDA the allocator's peaks since the last
    ``torch.cuda.reset_peak_memory_stats`` (allocated: live tensors; reserved: what the caching allocator holds,
    what the device really gives up) and the device's free and total memory now (``mem_get_info``: every process
    on the device counts); everywhere the process's peak RSS (since it started: it cannot be reset)."""
    snapshot: dict[str, float | None] = dict.fromkeys(MEMORY_FIELDS)
    snapshot["peak_rss_gb"] = _gb(peak_rss_bytes())
    if device.type == "cuda":
        import torch

        free, total = torch.cuda.mem_get_info(device)
        snapshot.update(peak_allocated_gb=_gb(torch.cuda.max_memory_allocated(device)),
                        peak_reserved_gb=_gb(torch.cuda.max_memory_reserved(device)),
                        device_free_gb=_gb(free), device_total_gb=_gb(total))
    return snapshot


def _gb(count: int) -> float:
    return round(count / 1e9, 3)
