"""``baton bench optimizations`` output: the markdown table, the JSON record and the bar chart."""

from __future__ import annotations

from pathlib import Path

from baton.bench.report import _machine_line, _pyplot, _ratio, memory_cells, write_outputs

KIND_COLOURS = {"reference": "#7f7f7f", "baseline": "#bcbd22", "option": "#1f77b4", "restart": "#17becf",
                "preset": "#d62728"}


def optimizations_markdown(report: dict) -> str:
    settings, machine = report["settings"], report["machine"]
    size = f"{settings['width']}x{settings['height']}" if settings["width"] else "native size"
    lines = [
        f"### baton bench optimizations: `{settings['model']}` {size}, {settings['images']} images, "
        f"{settings['steps']} steps on {machine['device']} ({machine.get('gpu') or machine.get('cpu')})",
        "",
        f"Each row in its own process; {settings['iterations']} iterations, the last one reported (and the median of "
        f"all). PSNR and max abs "
        f"difference against the first row's images (same seed). torch {machine['torch']}, diffusers "
        f"{machine['diffusers']}; {machine['created']}; `{machine['command']}`"
        + (f"; defaults from `--profile {settings['profile']}`" if settings.get("profile") else ""),
        "",
    ]
    ok = [row for row in report["results"] if row["status"] == "ok"]
    cuda = any(row.get("peak_allocated_gb") is not None for row in ok)
    memory_heads = "peak alloc GB | peak reserved GB | free / total GB" if cuda else "peak RSS GB"
    lines += [
        f"| configuration | latency s | median s | × fp32 | × stacked SDPA | UNet s | VAE decode s | {memory_heads} "
        f"| PSNR dB | max abs diff | ready s |{' TF32 |' if cuda else ''}",
        "|---|" + "---:|" * (10 + (2 if cuda else 0)) + ("---|" if cuda else ""),
    ]
    skipped = []
    for row in report["results"]:
        if row["status"] != "ok":
            skipped.append(f"- {row['config']}: {row['status']}: {row['reason'].splitlines()[-1]}")
            continue
        if row["kind"] == "reference":
            psnr = "reference"
        elif row["max_abs_diff"] is None:
            psnr = "–"  # the reference row did not run
        else:
            psnr = "identical" if row["psnr_db"] is None else f"{row['psnr_db']:.1f}"
        difference = "–" if row["max_abs_diff"] is None else f"{row['max_abs_diff']:.4f}"
        if not cuda and row.get("peak_rss_gb") is None:  # a report from before the memory columns
            row = {**row, "peak_rss_gb": row.get("peak_memory_gb")}
        lines.append(
            f"| {row['config']} | {row['latency_s']:.3f} | {row['median_latency_s']:.3f} | {_ratio(row['vs_fp32'])} "
            f"| {_ratio(row['vs_stacked_sdpa'])} | {_seconds(row.get('unet_s'))} | {_seconds(row.get('vae_decode_s'))} "
            f"| {memory_cells(row, cuda)} | {psnr} | {difference} | {row['ready_s']:.1f} |"
            + (f" {_tf32(row.get('tf32'))} |" if cuda else "")
        )
    clock = next((r.get("component_clock") for r in ok if r.get("component_clock")), None)
    lines += [""]
    if clock:
        lines.append(f"UNet and VAE decode: the last iteration's time inside the UNet's forwards and the VAE "
                     f"decoder's calls ({'CUDA event time' if clock == 'cuda-events' else 'wall time'}), the same "
                     "hooks for the stacked rows and baton's.")
    if cuda:
        lines.append("Memory: the row's process, allocator peaks over its iterations; free / total: the device "
                     "after the last iteration. TF32: the switches the row's process ran with (a float32 row: off).")
    else:
        lines.append("Memory: peak RSS of the row's process.")
    headline = headline_checks(report)
    if headline:
        lines += ["", *(f"- {line}" for line in headline)]
    if skipped:
        lines += ["", "Rows that do not apply here, with the engine's reason:", "", *skipped]
    return "\n".join(lines) + "\n"


def _seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _tf32(tf32: dict | None) -> str:
    if not tf32:
        return "–"
    on = [name for name, key in (("matmul", "matmul"), ("cuDNN", "cudnn")) if tf32.get(key)]
    return " + ".join(on) if on else "off"


def headline_checks(report: dict) -> list[str]:
    """The issue's comparisons, computed from the rows (never asserted in tests)."""
    rows = {r["config"]: r for r in report["results"] if r["status"] == "ok"}
    by_kind = lambda kind: [r for r in rows.values() if r["kind"] == kind]  # noqa: E731
    lines = []
    reference = next(iter(by_kind("reference")), None)
    half_sdpa = next((r for r in by_kind("option") if r["config"].endswith(" + SDPA")), None)
    if reference and half_sdpa:
        lines.append(f"{half_sdpa['config']}: {reference['latency_s'] / half_sdpa['latency_s']:.2f}× the speed of "
                     f"{reference['config']}")
    presets = by_kind("preset")
    if half_sdpa and presets:
        best = min(presets, key=lambda r: r["latency_s"])
        lines.append(f"fastest preset: {best['config']}, {half_sdpa['latency_s'] / best['latency_s']:.2f}× the speed "
                     f"of {half_sdpa['config']}")
    for row in presets:
        name = row["config"].removeprefix("preset ")
        if name in report["settings"]["lossless_presets"]:
            psnr = row["psnr_db"]
            verdict = "identical" if psnr is None else f"{psnr:.1f} dB"
            floor = report["settings"]["lossless_psnr_db"]
            lines.append(f"lossless preset {name}: {verdict} against the reference "
                         f"({'above' if psnr is None or psnr >= floor else 'BELOW'} {floor:g} dB)")
    for row in by_kind("restart"):
        lines.append(f"{row['config']}: ready in {row['ready_s']:.1f} s")
    return lines


def plot_optimizations(report: dict, path: Path) -> None:
    plt = _pyplot()
    rows = [r for r in report["results"] if r["status"] == "ok"]
    names = [r["config"] for r in rows]
    colours = [KIND_COLOURS[r["kind"]] for r in rows]
    figure, (latency_axis, memory_axis) = plt.subplots(1, 2, figsize=(13, 0.42 * len(rows) + 1.8), sharey=True)
    positions = range(len(rows))
    latency_axis.barh(positions, [r["latency_s"] for r in rows], color=colours)
    latency_axis.set_yticks(list(positions), names, fontsize=8)
    latency_axis.invert_yaxis()
    latency_axis.set_xlabel("latency of the last iteration (s)")
    for y, row in zip(positions, rows):
        label = "ref" if row["kind"] == "reference" else ("=" if row["psnr_db"] is None else f"{row['psnr_db']:.0f} dB")
        latency_axis.text(row["latency_s"], y, f" {label}", va="center", fontsize=7)
    memory_axis.barh(positions, [r["peak_memory_gb"] for r in rows], color=colours)
    memory_axis.set_xlabel(f"peak memory (GB; {rows[0]['memory_measure'] if rows else ''})")
    settings = report["settings"]
    figure.suptitle(f"{settings['model']}, {settings['images']} images, {settings['steps']} steps — "
                    f"{_machine_line(report)}", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_optimizations_outputs(report: dict, out_dir: Path) -> list[Path]:
    return write_outputs(report, out_dir, "optimizations", optimizations_markdown, plot_optimizations)
