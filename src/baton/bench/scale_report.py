"""``baton bench scale`` output: the markdown tables and the chart (``scale.md``, ``scale.png``)."""

from __future__ import annotations

from pathlib import Path

from baton.bench.report import _machine_line, _pyplot


def scale_markdown(report: dict) -> str:
    settings, machine = report["settings"], report["machine"]
    lines = [
        f"# baton bench scale: {settings['model']} on {settings['device']}",
        "",
        f"{machine.get('gpu') or machine.get('cpu')}, {machine['cpu_cores']} cores; torch {machine['torch']}; "
        f"{machine['created']}; `{machine['command']}`",
        "",
        "## Targets",
        "",
        "| check | measured | met |",
        "|---|---|---|",
        *(f"| {check['check']} | {check['value']} | {'yes' if check['met'] else '**no**'} |"
          for check in report["checks"]),
        "",
        f"## Throughput: {settings['width']}x{settings['height']}, {settings['steps']} steps, "
        f"{settings['concurrency']} closed-loop clients, {settings['requests']} requests x {settings['rounds']} "
        "rounds (interleaved)",
        "",
        "| layout | engine processes | threads each | images/s | by round | vs 1 process x 1 thread | p50 s | p95 s "
        "| failed |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["results"]:
        threads = "torch default" if row["threads"] is None else row["threads"]
        engines = "0 (in the bench's process)" if row["layout"] == "in-process" else row["engines"]
        ratio = "–" if row["vs_one_process"] is None else f"{row['vs_one_process']:.2f}x"
        lines.append(f"| {row['layout']} | {engines} | {threads} | {row['images_per_s']:.2f} | "
                     f"{', '.join(f'{v:.2f}' for v in row['images_per_s_by_round'])} | {ratio} | {row['p50_s']:.3f} | "
                     f"{row['p95_s']:.3f} | {row['failed']} |")
    overhead = report["overhead"]
    kill = report["kill"]
    lines += [
        "",
        f"## Router overhead: {overhead['pairs']} requests each way, one at a time, alternating "
        f"({overhead['request']['width']}x{overhead['request']['height']}, {overhead['request']['steps']} steps)",
        "",
        "| path | p50 ms |",
        "|---|---|",
        f"| engine in this process | {overhead['in_process_p50_ms']:.2f} |",
        f"| engine process, directly | {overhead['direct_p50_ms']:.2f} |",
        f"| engine process, through the router | {overhead['routed_p50_ms']:.2f} |",
        f"| **router overhead** (p50 difference; mean {overhead['overhead_mean_ms']:+.3f}) | "
        f"**{overhead['overhead_p50_ms']:+.3f}** |",
        f"| process hop (direct vs in this process) | {overhead['process_hop_p50_ms']:+.2f} |",
        "",
        f"## kill -9 of one of two engine processes after {settings['kill_after_s']} s of load",
        "",
        f"- {kill['requests']} requests: {kill['served']} served, {sum(kill['errors'].values())} failed with a clear "
        f"error ({', '.join(f'{name} {count}' for name, count in kill['errors'].items()) or 'none'}; "
        f"{kill['lost_started']} of them were denoising when the process died), **{kill['lost_silently']} lost "
        "silently**.",
        f"- Requests retried on the other engine (lost before they started denoising): {kill['retried']}.",
        f"- The killed engine's slot was serving again after **{kill['back_after_s']} s**.",
    ]
    if kill["error_messages"]:
        lines += ["", "Errors as clients saw them:", "", *(f"- `{message}`" for message in kill["error_messages"])]
    return "\n".join(lines) + "\n"


def plot_scale(report: dict, path: Path) -> None:
    """Images/s and p95 per layout."""
    plt = _pyplot()
    rows = report["results"]
    figure, (throughput, latency) = plt.subplots(1, 2, figsize=(10, 4))
    labels = [row["layout"] for row in rows]
    colours = ["#888888" if row["layout"] == "in-process" else "#2a7ab9" for row in rows]
    throughput.bar(labels, [row["images_per_s"] for row in rows], color=colours)
    for index, row in enumerate(rows):
        low, high = min(row["images_per_s_by_round"]), max(row["images_per_s_by_round"])
        throughput.plot([index, index], [low, high], color="black", linewidth=1)
    latency.bar(labels, [row["p95_s"] for row in rows], color=colours)
    settings = report["settings"]
    throughput.set_title(f"images/s, {settings['concurrency']} clients (range: rounds)")
    latency.set_title("p95 latency (s)")
    for axis in (throughput, latency):
        axis.set_xlabel("layout: K engine processes x T threads")
        axis.grid(alpha=0.3, axis="y")
    figure.suptitle(_machine_line(report), fontsize=8, y=0.02)
    figure.tight_layout(rect=(0, 0.04, 1, 1))
    figure.savefig(path, dpi=120)
    plt.close(figure)
