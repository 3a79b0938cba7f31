"""Profiling: a torch.profiler trace of a few requests, with each stage's work labelled, and a per-stage summary.

The stages label their work ``baton/<stage>`` (``record_function``, plus NVTX ranges on CUDA for Nsight), so the
trace (Chrome / Perfetto JSON: open it in https://ui.perfetto.dev) shows which stage ran what, on which thread and
stream. The summary adds up, for each stage, the time of the operators (CPU) and kernels (CUDA) that ran inside
its ranges and lists the top ones.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

LABEL_PREFIX = "baton/"


@contextlib.contextmanager
def profiled(out_dir: Path, device: torch.device, top: int = 15) -> Iterator[dict[str, Any]]:
    """Profile the enclosed work; on exit write ``trace.json``, ``summary.json`` and ``summary.md`` to ``out_dir``.

    Yields a dict that holds, once the block has exited, ``trace`` (the path) and ``summary``."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    outcome: dict[str, Any] = {}
    # the stages run on their own threads, started before the profiler: the profiler is per thread otherwise
    every_thread = torch._C._profiler._ExperimentalConfig(profile_all_threads=True)
    with torch.profiler.profile(activities=activities, experimental_config=every_thread) as profiler:
        yield outcome
    out_dir.mkdir(parents=True, exist_ok=True)
    trace = out_dir / "trace.json"
    profiler.export_chrome_trace(str(trace))
    summary = summarize(profiler.events(), cuda=device.type == "cuda", top=top)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out_dir / "summary.md").write_text(summary_markdown(summary))
    outcome.update(trace=trace, summary=summary, summary_path=out_dir / "summary.md")
    logger.info("profile written to %s", out_dir)


def summarize(events: list, cuda: bool, top: int = 15) -> dict[str, Any]:
    """Per stage: how many labelled ranges, their wall time, and the top operators (CPU) or kernels (CUDA)."""
    stages: dict[str, dict[str, Any]] = {}
    for event in events:
        if not event.name.startswith(LABEL_PREFIX):
            continue
        stage = stages.setdefault(
            event.name.removeprefix(LABEL_PREFIX),
            {"ranges": 0, "wall_ms": 0.0, "ops": defaultdict(lambda: [0, 0.0])},
        )
        stage["ranges"] += 1
        stage["wall_ms"] += event.cpu_time_total / 1000.0
        for op in _descendants(event):
            if cuda:
                for kernel in op.kernels:
                    _add(stage["ops"], kernel.name, kernel.duration / 1000.0)
            else:  # self time: each operator's own share, its children's counted under their own names
                _add(stage["ops"], op.name, op.self_cpu_time_total / 1000.0)
    result = {}
    for name, stage in stages.items():
        total = sum(ms for _, ms in stage["ops"].values())
        ranked = sorted(stage["ops"].items(), key=lambda item: item[1][1], reverse=True)[:top]
        result[name] = {
            "ranges": stage["ranges"],
            "wall_ms": round(stage["wall_ms"], 3),
            "measured": "cuda kernels" if cuda else "cpu operators",
            "total_ms": round(total, 3),
            "top": [
                {"name": op, "calls": calls, "ms": round(ms, 3), "share": round(ms / total, 4) if total else None}
                for op, (calls, ms) in ranked
            ],
        }
    return result


def summary_markdown(summary: dict[str, Any]) -> str:
    lines = ["# Profile summary", ""]
    for stage, data in summary.items():
        lines += [
            f"## {stage}: {data['ranges']} ranges, {data['wall_ms']:.1f} ms wall, {data['total_ms']:.1f} ms in "
            f"{data['measured']}",
            "",
            "| operator / kernel | calls | ms | share |",
            "|---|---|---|---|",
        ]
        for op in data["top"]:
            share = f"{op['share']:.1%}" if op["share"] is not None else ""
            name = op["name"] if len(op["name"]) <= 90 else op["name"][:87] + "..."
            lines.append(f"| `{name}` | {op['calls']} | {op['ms']:.2f} | {share} |")
        lines.append("")
    return "\n".join(lines)


def _descendants(event) -> Iterator:
    stack = list(event.cpu_children)
    while stack:
        op = stack.pop()
        yield op
        stack.extend(op.cpu_children)


def _add(ops: dict, name: str, ms: float) -> None:
    ops[name][0] += 1
    ops[name][1] += ms
