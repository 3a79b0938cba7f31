"""Benchmark output: a markdown table for the terminal and the README, the JSON record, and PNG charts."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from baton.stage_names import DENOISE, PIPELINE, TEXT_ENCODE, VAE_DECODE

MODE_COLOURS = {
    "stacked": "#7f7f7f",
    "staged": "#1f77b4",
    "staged-step": "#d62728",
    "batched-ceiling": "#2ca02c",
}
COMPONENT_COLOURS = {TEXT_ENCODE: "#9467bd", DENOISE: "#d62728", VAE_DECODE: "#ff7f0e"}
BUSY_METHODS = {
    "cuda-kernels": "GPU kernel time launched inside the denoiser's forwards (torch.profiler, every thread) over the "
                    "wall time of an extra pass of the same load point run after the measured one",
    "cpu-profiler": "CPU time inside the denoiser's forwards (torch.profiler) over the wall time of an extra pass of "
                    "the same load point run after the measured one",
    "cpu-spans": "time inside the denoiser's forwards over the measured pass's wall time (on a CPU, CPU time is the "
                 "kernel time)",
    "cuda-event-spans": "CUDA event time around the denoiser's forwards over the measured pass's wall time (counts "
                        "the host's launch gaps inside a forward as busy)",
}


def serve_markdown(report: dict) -> str:
    """The results table, with the machine and settings above it and the headline comparisons below."""
    settings, machine = report["settings"], report["machine"]
    device = machine.get("gpu") or machine.get("cpu")
    dtype = settings["dtype"]
    resolved = {details["dtype"] for details in (report.get("mode_details") or {}).values()}
    if dtype == "auto" and len(resolved) == 1:
        dtype = f"auto ({resolved.pop()})"
    lines = [
        f"### baton bench serve: `{settings['model']}` {settings['width']}x{settings['height']}, "
        f"{settings['steps']} steps, {dtype} on {machine['device']} ({device})",
        "",
        f"{settings['requests']} measured requests per mode and point after warm-up, {settings['rounds']} "
        f"interleaved round(s); torch {machine['torch']}, "
        f"diffusers {machine['diffusers']}; {machine['created']}; `{machine['command']}`",
        "",
        f"Optimizations of the staged modes (staged, staged-step): {options_summary(settings.get('optimizations'))}; "
        "stacked and batched-ceiling: the plain diffusers pipeline in the same dtype."
        + (f" Defaults from `--profile {settings['profile']}`." if settings.get("profile") else "")
        + (f" {tf32_text(machine['tf32'])}." if machine.get("gpu") and machine.get("tf32") else ""),
        "",
    ]
    cuda = any(row.get("peak_allocated_gb") is not None for row in report["results"])
    memory_heads = "peak alloc GB | peak reserved GB | free / total GB" if cuda else "peak RSS GB"
    lines += [
        "| mode | load | images/s | × stacked | × ceiling | p50 s | p95 s | p99 s | denoiser rows/forward "
        f"| denoiser busy | queue wait ms (encode / denoise / decode) | {memory_heads} | failed |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|" + "---:|" * (3 if cuda else 1) + "---:|",
    ]
    for row in report["results"]:
        waits = row["queue_wait_s"]
        wait_text = " / ".join(
            f"{waits[stage] * 1e3:.1f}" if stage in waits else "–" for stage in (TEXT_ENCODE, DENOISE, VAE_DECODE)
        )
        if PIPELINE in waits:
            wait_text = f"{waits['pipeline'] * 1e3:.1f} (whole pipeline)"
        lines.append(
            f"| {row['mode']} | {_load(row)} | {row['images_per_s']:.2f} | {_ratio(row['vs_stacked'])} "
            f"| {_ratio(row['vs_ceiling'])} | {row['p50_s']:.3f} | {row['p95_s']:.3f} | {row['p99_s']:.3f} "
            f"| {row['denoiser_rows_per_forward'] or '–'} | {_percent(row['denoiser_busy'])} "
            f"| {wait_text if waits else '–'} | {memory_cells(row, cuda)} | {row['failed']} |"
        )
    methods = sorted({row.get("denoiser_busy_method") or "cpu-spans" for row in report["results"]})
    lines.append("")
    for method in methods:
        lines.append(f"Denoiser busy ({method}): {BUSY_METHODS.get(method.split(' ')[0], method)}"
                     + (f" {method.split(' ', 1)[1]}." if " " in method else "."))
    if cuda:
        lines.append("Memory per mode's process, peaks over the measured pass (free / total: the whole device, "
                     "every mode's process holding its model).")
    headline = headline_checks(report)
    if headline:
        lines += ["", *(f"- {line}" for line in headline)]
    return "\n".join(lines) + "\n"


def headline_checks(report: dict) -> list[str]:
    """The comparisons the issue's targets are stated in, computed from the rows (never asserted in tests)."""
    rows = {(r["mode"], r["concurrency"]): r for r in report["results"] if r["arrival"] == "closed"}
    levels = sorted({c for _, c in rows})
    if not levels:
        return []
    lines = []
    top, one = levels[-1], levels[0]
    step, stacked, ceiling = (rows.get((m, top)) for m in ("staged-step", "stacked", "batched-ceiling"))
    if step and ceiling:
        lines.append(f"{top} clients: staged-step reaches {step['images_per_s'] / ceiling['images_per_s']:.2f}× "
                     "the batched ceiling's throughput")
    if step and stacked:
        lines.append(f"{top} clients: staged-step {step['images_per_s'] / stacked['images_per_s']:.2f}× stacked "
                     f"throughput; p95 {step['p95_s']:.3f} s vs stacked {stacked['p95_s']:.3f} s")
        lines.append(f"{top} clients: denoiser busy {_percent(step['denoiser_busy'])} (staged-step) vs "
                     f"{_percent(stacked['denoiser_busy'])} (stacked)")
    step_one, stacked_one = rows.get(("staged-step", one)), rows.get(("stacked", one))
    if step_one and stacked_one:
        lines.append(f"{one} client: staged-step p50 {step_one['p50_s']:.3f} s vs stacked {stacked_one['p50_s']:.3f} s "
                     f"({(step_one['p50_s'] / stacked_one['p50_s'] - 1) * 100:+.1f}%)")
    return lines


def options_summary(options: dict | None) -> str:
    """``preset `fast`: fuse_qkv True, prompt_cache.max_bytes 256 MiB``: the preset and every option that differs
    from the engine's defaults."""
    from baton.config import OptimizationConfig

    if not options:
        return "the engine's defaults"
    changes = [f"{name} {_option_value(name, value)}"
               for name, value in _differences(_plain(options), _plain(asdict(OptimizationConfig())))
               if name != "preset"]
    preset = f"preset `{options['preset']}`" if options.get("preset") else "no preset"
    return preset + (": " + ", ".join(changes) if changes else " (the engine's defaults)")


def tf32_text(tf32: dict[str, Any]) -> str:
    on = lambda flag: "on" if flag else "off"  # noqa: E731
    return (f"TF32: matmul {on(tf32['matmul'])}, cuDNN {on(tf32['cudnn'])} (float32 matmul precision "
            f"{tf32['float32_matmul_precision']})")


def memory_cells(row: dict, cuda: bool) -> str:
    """The memory columns of a row: allocator peaks and device free / total on CUDA, peak RSS on a CPU."""
    gb = lambda value: "–" if value is None else f"{value:.2f}"  # noqa: E731
    if not cuda:
        return gb(row.get("peak_rss_gb"))
    free, total = row.get("device_free_gb"), row.get("device_total_gb")
    device = "–" if free is None or total is None else f"{free:.1f} / {total:.1f}"
    return f"{gb(row.get('peak_allocated_gb'))} | {gb(row.get('peak_reserved_gb'))} | {device}"


def _differences(value: Any, default: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(value, dict) and isinstance(default, dict):
        return [item for key in value for item in _differences(value[key], default.get(key), f"{prefix}{key}.")]
    return [] if value == default else [(prefix.rstrip("."), value)]


def _plain(value: Any) -> Any:
    """Tuples as lists, as after a JSON round trip, so a report compares the same before and after."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def _option_value(name: str, value: Any) -> str:
    if name.endswith("max_bytes") and isinstance(value, int):
        return f"{value / 2**20:.0f} MiB"
    return str(value)


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.0f}%"


def write_json(report: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")


def write_outputs(report: dict, out_dir: Path, stem: str, markdown, plot) -> list[Path]:
    """``STEM.json``, ``STEM.md`` (``markdown(report)``) and ``STEM.png`` (``plot(report, path)``) in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.json", out_dir / f"{stem}.md", out_dir / f"{stem}.png"]
    write_json(report, paths[0])
    paths[1].write_text(markdown(report))
    plot(report, paths[2])
    return paths


def plot_serve(report: dict, path: Path) -> None:
    """Throughput and p95 latency against load, one line per mode."""
    plt = _pyplot()
    closed = [r for r in report["results"] if r["arrival"] == "closed"]
    rows = closed or report["results"]
    x_key, x_label = ("concurrency", "concurrent clients") if closed else ("rate", "arrival rate (requests/s)")
    figure, (throughput, latency) = plt.subplots(1, 2, figsize=(11, 4.2))
    for mode, colour in MODE_COLOURS.items():
        series = sorted((r[x_key], r) for r in rows if r["mode"] == mode)
        if not series:
            continue
        xs = [x for x, _ in series]
        throughput.plot(xs, [r["images_per_s"] for _, r in series], "o-", color=colour, label=mode)
        latency.plot(xs, [r["p95_s"] for _, r in series], "o-", color=colour, label=mode)
    settings = report["settings"]
    title = f"{settings['model']} {settings['width']}x{settings['height']}, {settings['steps']} steps"
    for axis, label in ((throughput, "images/s"), (latency, "p95 latency (s)")):
        axis.set_xlabel(x_label)
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        if closed:
            axis.set_xscale("log", base=2)
            axis.set_xticks(sorted({r[x_key] for r in rows}), labels=[str(x) for x in sorted({r[x_key] for r in rows})])
    throughput.set_title(f"throughput: {title}")
    latency.set_title("p95 latency")
    throughput.legend()
    figure.suptitle(_machine_line(report), fontsize=8, y=0.02)
    figure.tight_layout(rect=(0, 0.04, 1, 1))
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_timeline(report: dict, path: Path) -> None:
    """For each mode recorded, two requests' lifetimes and the spans of each model component."""
    plt = _pyplot()
    timelines = report.get("timeline") or {}
    if not timelines:
        return
    figure, axes = plt.subplots(len(timelines), 1, figsize=(11, 1.6 + 1.5 * len(timelines)), sharex=True,
                                squeeze=False)
    lanes = ["request 1", "request 2", TEXT_ENCODE, DENOISE, VAE_DECODE]
    for axis, (mode, timeline) in zip(axes[:, 0], timelines.items()):
        for request in timeline["requests"]:
            lane = lanes.index(request["name"])
            axis.barh(lane, request["finished_s"] - request["submitted_s"], left=request["submitted_s"],
                      color="#bbbbbb", edgecolor="black", height=0.6)
            axis.text(request["finished_s"], lane, f" {request['finished_s'] - request['submitted_s']:.2f} s",
                      va="center", fontsize=8)
        for span in timeline["spans"]:
            axis.barh(lanes.index(span["component"]), span["end_s"] - span["start_s"], left=span["start_s"],
                      color=COMPONENT_COLOURS[span["component"]], height=0.6,
                      alpha=0.45 if span["rows"] <= _single_rows(timeline) else 1.0)
        axis.set_xlim(left=0)
        axis.set_yticks(range(len(lanes)), labels=lanes)
        axis.invert_yaxis()
        axis.set_title(f"{mode}: request 2 arrives while request 1 runs (dark denoiser spans: both in one forward)",
                       fontsize=9)
        axis.grid(axis="x", alpha=0.3)
    axes[-1, 0].set_xlabel("seconds since request 1 arrived")
    figure.suptitle(_machine_line(report), fontsize=8, y=0.01)
    figure.tight_layout(rect=(0, 0.03, 1, 1))
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_serve_outputs(report: dict, json_path: Path | None, markdown_path: Path | None,
                        plot_dir: Path | None) -> list[Path]:
    written = []
    if json_path is not None:
        write_json(report, json_path)
        written.append(json_path)
    if markdown_path is not None:
        markdown_path.parent.mkdir(parents=True, exist_ok=True)
        markdown_path.write_text(serve_markdown(report))
        written.append(markdown_path)
    if plot_dir is not None:
        plot_dir.mkdir(parents=True, exist_ok=True)
        plot_serve(report, plot_dir / "serve.png")
        written.append(plot_dir / "serve.png")
        if report.get("timeline"):
            plot_timeline(report, plot_dir / "timeline.png")
            written.append(plot_dir / "timeline.png")
    return written


def _single_rows(timeline: dict) -> int:
    """Rows of one request's denoiser forward: the smallest batch seen."""
    rows = [span["rows"] for span in timeline["spans"] if span["component"] == DENOISE]
    return min(rows) if rows else 0


def _load(row: dict) -> str:
    if row["arrival"] != "closed":
        return f"{row['rate']:g} req/s"
    return f"{row['concurrency']} client{'s' if row['concurrency'] != 1 else ''}"


def _ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _machine_line(report: dict) -> str:
    machine = report["machine"]
    return (f"{machine.get('gpu') or machine.get('cpu')} · {machine['cpu_cores']} cores · torch {machine['torch']} · "
            f"diffusers {machine['diffusers']} · {machine['created']}")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display here or on servers
    import matplotlib.pyplot as plt

    return plt
