"""``baton bench quality`` output: the markdown table, the headline checks, the JSON record and the charts."""

from __future__ import annotations

from pathlib import Path

from baton.bench.report import _machine_line, _pyplot, write_outputs

SCORED = ("colour", "shape", "count")
KIND_COLOURS = {"reference": "#7f7f7f", "baseline": "#bcbd22", "option": "#1f77b4", "sampler": "#9467bd",
                "preset": "#d62728", "steps": "#2ca02c", "guidance": "#8c564b"}
FREE_FORM = "free-form (all named)"


def quality_markdown(report: dict) -> str:
    settings, machine = report["settings"], report["machine"]
    lines = [
        f"### baton bench quality: `{settings['model']}`, {settings['prompts']} held-out template prompts on "
        f"{machine['device']} ({machine.get('gpu') or machine.get('cpu')})",
        "",
        f"Accuracy: the share of images in which the detector reads the prompt's attribute. Δ: percentage points "
        f"against the reference. PSNR/SSIM: against the reference's image of the same prompt and seed (free-form "
        f"images included). {settings['default_steps']} steps and the model's guidance scale unless the row says "
        f"otherwise. torch {machine['torch']}, diffusers "
        f"{machine['diffusers']}; {machine['created']}; `{machine['command']}`",
        "",
        "| configuration | colour | shape | count | size | position | all three | Δ colour | Δ shape | Δ count "
        "| PSNR dB | SSIM | images/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    skipped = []
    for row in report["results"]:
        if row["status"] != "ok":
            skipped.append(f"- {row['config']}: {row['status']}: {row['reason'].strip().splitlines()[-1]}")
            continue
        accuracy, delta = row["accuracy"], row["delta_points"] or {}
        if row["kind"] == "reference":
            psnr, similarity = "reference", "reference"
        elif row["identical"]:
            psnr, similarity = "identical", "1.0000"
        else:
            psnr = "–" if row["psnr_db"] is None else f"{row['psnr_db']:.1f}"
            similarity = "–" if row["ssim"] is None else f"{row['ssim']:.4f}"
        lines.append(
            f"| {row['config']} | " + " | ".join(f"{100 * accuracy[a]:.1f}%" for a in (*SCORED, "size", "position"))
            + f" | {100 * accuracy['colour+shape+count']:.1f}% | "
            + " | ".join(_signed(delta.get(a)) for a in SCORED)
            + f" | {psnr} | {similarity} | {row['images_per_s']:.1f} |"
        )
    lines += free_form_markdown(report)
    lines += ["", *(f"- {line}" for line in headline_checks(report))]
    if skipped:
        lines += ["", "Rows that do not apply here, with the engine's reason:", "", *skipped]
    return "\n".join(lines) + "\n"


def free_form_markdown(report: dict) -> list[str]:
    """The free-form table: per row, the share of images with every named attribute right, overall and per
    style (empty when the run drew no free-form prompts)."""
    rows = [r for r in report["results"] if r["status"] == "ok" and "free_form" in r]
    if not rows:
        return []
    styles = [group for group in rows[0]["free_form"] if group != "overall"]
    settings = report["settings"]
    return [
        "",
        f"Free-form prompts ({settings['free_form_prompts']} prompts × {settings['free_form_seeds']} seeds, "
        f"`baton.shapes.prompts`): the share of images with every attribute the prompt names right; in brackets, "
        f"colour / shape / count where named.",
        "",
        "| configuration | overall | " + " | ".join(styles) + " |",
        "|---|" + "---:|" * (len(styles) + 1),
        *(f"| {row['config']} | {_free_form_cell(row['free_form']['overall'])} | "
          + " | ".join(f"{100 * row['free_form'][style]['all named']:.1f}%" for style in styles) + " |"
          for row in rows),
    ]


def _free_form_cell(shares: dict[str, float]) -> str:
    parts = " / ".join(f"{100 * shares[a]:.0f}" for a in SCORED if a in shares)
    return f"{100 * shares['all named']:.1f}% ({parts})"


def headline_checks(report: dict) -> list[str]:
    """The issue's bar for the reference, and the at-most-1-point rule for the gated options (never asserted in
    tests: a benchmark reports, CI does not time or judge it)."""
    settings = report["settings"]
    rows = [r for r in report["results"] if r["status"] == "ok"]
    lines = []
    reference = next((r for r in rows if r["kind"] == "reference"), None)
    if reference is not None:
        for attribute, target in settings["targets"].items():
            value = reference["accuracy"][attribute]
            lines.append(f"reference {attribute} accuracy {value:.1%} (target {target:.0%}: "
                         f"{'met' if value >= target else 'NOT MET'})")
        target = settings.get("free_form_target")
        for group, shares in reference.get("free_form", {}).items():
            value = shares["all named"]
            lines.append(f"reference free-form {group}: every named attribute right in {value:.1%} "
                         f"(target {target:.0%}: {'met' if value >= target else 'NOT MET'})")
    limit = settings["max_drop_points"]
    for row in rows:
        if row["gated"] and row["delta_points"] is not None:
            worst = max(abs(row["delta_points"][a]) for a in SCORED)
            lines.append(f"{row['config']}: largest accuracy change {worst:.1f} points "
                         f"({'within' if worst <= limit else 'OVER'} {limit:g})")
    baseline = next((r for r in rows if r["kind"] == "baseline"), None)
    if baseline is not None and reference is not None:
        same = ("identical images" if baseline["identical"] else
                f"PSNR {baseline['psnr_db']} dB, max abs difference {baseline['max_abs_diff']:.1e}")
        lines.append(f"baton's engine against the plain diffusers pipeline, same prompts and seeds: {same}")
    return lines


def plot_quality(report: dict, path: Path) -> None:
    """Left: colour/shape/count accuracy per row. Right: accuracy against the number of steps."""
    plt = _pyplot()
    rows = [r for r in report["results"] if r["status"] == "ok"]
    figure, (bars_axis, steps_axis) = plt.subplots(
        1, 2, figsize=(14, 0.36 * len(rows) + 2.2), gridspec_kw={"width_ratios": [2.2, 1]})
    height = 0.2
    for offset, (attribute, colour) in enumerate(zip((*SCORED, FREE_FORM),
                                                     ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd"))):
        bars_axis.barh([i + (offset - 1.5) * height for i in range(len(rows))],
                       [100 * _share(r, attribute) for r in rows], height=height, color=colour, label=attribute)
    targets = [*report["settings"]["targets"].values(), report["settings"].get("free_form_target")]
    for target in (t for t in targets if t is not None):
        bars_axis.axvline(100 * target, color="#444444", linestyle=":", linewidth=0.8)
    bars_axis.set_yticks(range(len(rows)), [_label(r) for r in rows], fontsize=8)
    bars_axis.invert_yaxis()
    bars_axis.set_xlim(0, 100)
    bars_axis.set_xlabel("prompt accuracy (%); dotted: the targets")
    bars_axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=4, fontsize=8)  # off the bars
    default_steps = report["settings"]["default_steps"]
    by_steps = sorted((r for r in rows if r["kind"] in ("steps", "reference")), key=lambda r: r["steps"])
    for attribute in (*SCORED, FREE_FORM):
        steps_axis.plot([r["steps"] for r in by_steps], [100 * _share(r, attribute) for r in by_steps],
                        marker="o", label=attribute)
    steps_axis.axvline(default_steps, color="#444444", linestyle=":", linewidth=0.8)
    steps_axis.set_xlabel(f"denoising steps (dotted: the default, {default_steps})")
    steps_axis.set_ylabel("prompt accuracy (%)")
    steps_axis.set_ylim(0, 100)
    steps_axis.legend(fontsize=8)
    settings = report["settings"]
    figure.suptitle(f"{settings['model']}, {settings['prompts']} held-out template prompts and "
                    f"{settings.get('free_form_prompts', 0)} free-form × {settings.get('free_form_seeds', 0)} seeds "
                    f"— {_machine_line(report)}",
                    fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_quality_outputs(report: dict, out_dir: Path) -> list[Path]:
    return write_outputs(report, out_dir, "quality", quality_markdown, plot_quality)


def _share(row: dict, attribute: str) -> float:
    """A template attribute's accuracy, or the free-form overall share (0 when the row drew none)."""
    if attribute == FREE_FORM:
        return row.get("free_form", {}).get("overall", {}).get("all named", 0.0)
    return row["accuracy"][attribute]


def _label(row: dict) -> str:
    if row["kind"] == "reference" or row["psnr_db"] is None:
        return row["config"] + (" (identical)" if row.get("identical") else "")
    return f"{row['config']} ({row['psnr_db']:.0f} dB)"


def _signed(value: float | None) -> str:
    return "–" if value is None else f"{value:+.1f}"
