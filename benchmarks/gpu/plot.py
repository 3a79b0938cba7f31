"""Draw the charts and tables of a GPU check here, from the JSON that came back (PNGs would cost files there).

Usage: ``.venv/bin/python benchmarks/gpu/plot.py benchmarks/results/DATE-gpu-check-h200``

Writes beside the JSON: ``gpu-check.md`` (machine and each part's outcome), ``c-serve-eager.{md,png}`` and
``c-serve-graphs.{md,png}`` (plus their timelines), ``d-sdxl.{md,png}`` and ``e-compile.{md,png}``, with baton's
own report functions, so the charts match the CPU results'. A file that is missing or does not read is reported
and skipped: a check whose later parts timed out still gets the charts of the earlier ones.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def summary_markdown(summary: dict[str, Any], tests: dict[str, Any] | None) -> str:
    machine = summary.get("machine") or {}
    smi = machine.get("nvidia_smi")
    driver = smi[0].get("driver_version") if isinstance(smi, list) and smi else "?"
    lines = [
        f"# GPU check, {summary.get('created', '?')}",
        "",
        f"{machine.get('gpu', '?')}, driver {driver}, CUDA {machine.get('cuda', '?')}, torch {machine.get('torch')}, "
        f"diffusers {machine.get('diffusers')}, transformers {machine.get('transformers')}, "
        f"Python {machine.get('python')}; commit {summary.get('git_commit') or '?'}.",
        f"TF32 by default: {machine.get('tf32')}; attention kernels that ran (fp16): {machine.get('sdpa_runs_fp16')}.",
        "",
        f"{summary.get('elapsed_s')} s of the {summary.get('budget_s')} s budget"
        + ("" if summary.get("finished") else " (the driver did not finish: the window closed or it was killed)"),
        "",
        "| part | status | seconds | cap (s) | exit | note |",
        "|---|---|---:|---:|---:|---|",
    ]
    for part in summary.get("parts", []):
        note = part.get("reason") or part.get("result_error") or ""
        lines.append(f"| {part['name']} | {part['status']} | {part.get('seconds', '')} | {part['cap_s']} "
                     f"| {part.get('exit_code', '')} | {note} |")
    if tests:
        lines += ["", f"CUDA tests: {tests['passed']} passed, {tests['failed']} failed, {tests['errors']} errors, "
                      f"{tests['skipped']} skipped."]
        lines += [f"- `{failure['name']}`: {failure['message']}" for failure in tests["failures"]]
    return "\n".join(lines) + "\n"


def draw(folder: Path) -> list[Path]:
    from baton.bench.optimizations_report import optimizations_markdown, plot_optimizations
    from baton.bench.report import plot_serve, plot_timeline, serve_markdown

    written: list[Path] = []

    def serve(report: dict, stem: str) -> None:
        (folder / f"{stem}.md").write_text(serve_markdown(report))
        plot_serve(report, folder / f"{stem}.png")
        written.extend([folder / f"{stem}.md", folder / f"{stem}.png"])
        if report.get("timeline"):
            plot_timeline(report, folder / f"{stem}-timeline.png")
            written.append(folder / f"{stem}-timeline.png")

    def optimizations(report: dict, stem: str) -> None:
        (folder / f"{stem}.md").write_text(optimizations_markdown(report))
        plot_optimizations(report, folder / f"{stem}.png")
        written.extend([folder / f"{stem}.md", folder / f"{stem}.png"])

    def overview(summary: dict) -> None:
        (folder / "gpu-check.md").write_text(summary_markdown(summary, _read(folder / "a-tests.json")))
        written.append(folder / "gpu-check.md")

    def compiled(results: dict) -> None:
        if "bench" in results:
            optimizations(results["bench"], "e-compile")

    steps = [
        ("gpu-check.json", overview),
        ("c-serve.json", lambda both: [serve(report, f"c-serve-{key}") for key, report in both.items()]),
        ("d-sdxl.json", lambda report: optimizations(report, "d-sdxl")),
        ("e-compile.json", compiled),
    ]
    for name, make in steps:
        try:
            report = _read(folder / name)
            if report is None:
                print(f"{name}: not there (the part was skipped or wrote nothing)")
                continue
            make(report)
        except Exception as exc:  # noqa: BLE001 - one unreadable report must not cost the others their charts
            print(f"{name}: could not draw: {type(exc).__name__}: {exc}")
    return written


def _read(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


if __name__ == "__main__":
    if len(sys.argv) != 2 or not Path(sys.argv[1]).is_dir():
        sys.exit("usage: plot.py RESULTS_FOLDER")
    for path in draw(Path(sys.argv[1])):
        print(f"wrote {path}")
