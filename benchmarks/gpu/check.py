"""``make gpu-check``: one prepared, budgeted command that turns a short GPU window into result files.

A GPU window here is ~15 minutes including the machine's start, one command of at most 10 minutes, and at most 8
files back (docs/benchmarks.md, "Running on a GPU"). So the check is a list of parts, each a command run in its own
process group under its own cap, in order of value: correctness first, then the benchmarks, compile last. Before a
part starts the driver checks what is left of the budget and skips the part if its cap does not fit. After every
part it writes that part's result and rewrites the summary, so a part that hangs, or the window closing, loses
nothing that ran before it.

Output folder (``$OUT`` when set, else ``--out``), 8 files::

    gpu-check.json   machine, setup, and each part's status, seconds, cap and exit code
    log.txt          every part's output, each line prefixed with the part's name
    a-tests.json     pytest tests/gpu -m "not compile", from its JUnit XML
    b-syncs.json     python -m baton.bench.syncs (host syncs with file:line and thread)
    c-serve.json     baton bench serve --profile gpu: {"eager": ..., "graphs": ...}
    d-sdxl.json      baton bench optimizations --profile gpu (SDXL 1024², baton vs diffusers)
    e-compile.json   {"bench": compile cold and warm, "tests": pytest tests/gpu -m compile}
    f-scale.json     baton bench scale on cuda:0: 1, 2 and 4 engine processes sharing the GPU, router overhead,
                     kill -9 under load

``--suite dit`` runs issue 17's diffusion-transformer rows instead, in the same budget and files' limit::

    gpu-check.json, log.txt   as above
    g-tests.json     pytest tests/gpu/test_cuda_transformers.py: SD3, Flux, PixArt-Σ against diffusers on CUDA
    g-flux.json      baton bench optimizations: flux-dev-random 1024², 28 steps, bf16: {"eager": diffusers vs
                     baton eager, "compile": baton compiled} (no float32 reference: it would take the window)
    g-sd3.json       the same for sd3-medium-random 1024², 28 steps with guidance: diffusers vs baton eager
    g-serve.json     baton bench serve, flux-dev-random, 8 clients: {"512": ..., "1024": ...}, stacked against
                     staged-step
    g-schnell.json   baton bench serve, flux-schnell-random 1024², 4 steps, no guidance, 1 and 8 clients

Raw outputs (JUnit XML, the benches' own folders, wheels, the inductor cache) go to a scratch folder outside the
output folder, since only 8 files come back. Without CUDA, or with ``--dry-run``, the driver prints the plan and
exits 0. Plots are drawn back here from the JSON (``benchmarks/gpu/plot.py``).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[2]
SUMMARY = "gpu-check.json"
LOG = "log.txt"
MAX_FILES = 8  # the device tool brings back at most 8 files from $OUT
MAX_LOG_BYTES = 8 * 2**20  # a file over 16 MiB does not come back at all: stop the log well before that
KILL_GRACE_S = 5.0  # SIGTERM first so CUDA contexts close cleanly, then SIGKILL
DEFAULT_BUDGET_S = 540  # one device command may run 600 s: leave a minute for start-up and the last writes
FILE_NAME = re.compile(r"^[A-Za-z0-9._-]+$")  # what the device tool brings back; also keeps results one folder deep
SERVE = ("-m", "baton.cli", "bench", "serve", "--profile", "gpu")
SCALE = ("-m", "baton.cli", "bench", "scale", "--device", "cuda:0", "--model", "sd15-random", "--size", "512x512",
         "--steps", "25", "--layouts", "1,2,4", "--concurrency", "8", "--requests", "16", "--rounds", "1",
         "--overhead-pairs", "20", "--kill-requests", "32")
"""Issue 16's H200 row: one engine process against K = 2 and 4 on one GPU (no MPS: its daemon is not ours to
start), sd15-random 512², images/s and p95."""
OPTIMIZATIONS = ("-m", "baton.cli", "bench", "optimizations", "--profile", "gpu")
DIT_OPTIMIZATIONS = ("-m", "baton.cli", "bench", "optimizations", "--device", "cuda", "--half", "bfloat16",
                     "--size", "1024x1024", "--steps", "28", "--images", "1", "--iterations", "1", "--no-reference")
"""Issue 17's latency rows. No float32 reference: Flux-dev in float32 without TF32 is ~35 s a generation here."""
DIT_SERVE = ("-m", "baton.cli", "bench", "serve", "--device", "cuda", "--dtype", "bfloat16", "--modes",
             "stacked,staged-step", "--rounds", "1", "--timeline", "false")
SUITES = ("default", "dit")
# The compile row and its restart (`--only` takes exact row names; one with a comma in it is matched whole).
COMPILE_ROWS = "fp16 + SDPA + compile,fp16 + SDPA + compile (restart, warm cache)"


@dataclasses.dataclass(frozen=True, slots=True)
class Part:
    """One step of the check: a command run in its own process group, killed past ``cap_s``.

    ``read`` turns what the command wrote into the scratch folder into the part's result, which goes to the file
    ``result`` in the output folder: the whole file, or its ``key`` where several parts share one file (the summary
    too: the setup and the probe fill its "setup" and "machine").
    """

    name: str
    argv: tuple[str, ...]
    cap_s: int
    result: str | None = None
    key: str | None = None
    read: Callable[[], Any] | None = None
    stretch: bool = False
    """May run past ``cap_s`` into what the earlier parts left unused, short of the caps of the parts after it
    (the cold compile: it needs minutes, and gets whatever the window has left)."""


def gpu_parts(scratch: Path, python: str = sys.executable, wheels: tuple[Path, ...] = (),
              suite: str = "default") -> list[Part]:
    """The check, in order of value; ``suite`` ``dit``: issue 17's diffusion-transformer rows instead."""
    if suite == "dit":
        return dit_parts(scratch, python, wheels)
    parts = setup_parts(scratch, python, wheels)
    # 3. correctness on CUDA before any number is worth quoting; compile tests wait for the end (minutes each)
    parts.append(pytest_part(python, "a-tests", "not compile", scratch / "a-junit.xml", cap_s=80,
                              result="a-tests.json"))
    parts.append(Part(
        "b-syncs", (python, "-m", "baton.bench.syncs", "--models", "tiny-sd15,tiny-sdxl,tiny-lcm", "--steps", "10",
                    "--json", str(scratch / "b-syncs.json")),
        cap_s=40, result="b-syncs.json", read=lambda: read_json(scratch / "b-syncs.json")))
    # 4. serving: two parts sharing one file, so a hang in the graphs run keeps the eager numbers
    for key, flags in (("eager", ()), ("graphs", ("--cuda-graphs",))):
        raw = scratch / f"c-serve-{key}.json"
        parts.append(Part(f"c-serve-{key}", (python, *SERVE, *flags, "--json", str(raw)), cap_s=88,
                          result="c-serve.json", key=key, read=lambda raw=raw: read_json(raw)))
    # 5. SDXL 1024²: baton eager fp16 + SDPA against the plain diffusers pipeline; only its JSON comes back
    parts.append(Part("d-sdxl", (python, *OPTIMIZATIONS, "--out", str(scratch / "d-sdxl")), cap_s=90,
                      result="d-sdxl.json", read=lambda: read_json(scratch / "d-sdxl" / "optimizations.json")))
    # 6. engine processes sharing the GPU (before compile: a cold compile may take whatever is left)
    parts.append(Part("f-scale", (python, *SCALE, "--out", str(scratch / "f-scale")), cap_s=60,
                      result="f-scale.json", read=lambda: read_json(scratch / "f-scale" / "scale.json")))
    # 7. compile last: a cold compile takes minutes, so it runs only on what the earlier parts left over.
    #    Its own cache folder keeps the "cold" row cold even if an earlier part compiled something.
    parts.append(Part(
        "e-compile-bench", (python, *OPTIMIZATIONS, "--only", COMPILE_ROWS, "--compile-cache",
                            str(scratch / "e-inductor"), "--out", str(scratch / "e-compile")),
        cap_s=28, result="e-compile.json", key="bench", stretch=True,
        read=lambda: read_json(scratch / "e-compile" / "optimizations.json")))
    # three tests of two cold compiles each: several minutes, so they too take what is left, if anything is
    parts.append(dataclasses.replace(pytest_part(python, "e-compile-tests", "compile", scratch / "e-junit.xml",
                                                 cap_s=25, result="e-compile.json", key="tests"), stretch=True))
    return parts


def setup_parts(scratch: Path, python: str, wheels: tuple[Path, ...]) -> list[Part]:
    """What every suite starts with: diffusers installed from wheels, then the machine probed."""
    site = scratch / "site"
    parts = []
    # 1. setup: diffusers travels as wheels (the GPU host has none and no network); only what the host lacks
    if wheels:
        parts.append(Part(
            "setup", (python, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                      "--no-cache-dir", "--upgrade", "--target", str(site), *map(str, wheels)),
            cap_s=15, result=SUMMARY, key="setup",
            read=lambda: {"site": str(site), "wheels": [wheel.name for wheel in wheels]}))
    # 2. the machine, probed after the install so the diffusers it reports is the one the parts import
    parts.append(Part("probe", (python, "benchmarks/gpu/probe.py", str(scratch / "probe.json")), cap_s=25,
                      result=SUMMARY, key="machine", read=lambda: read_json(scratch / "probe.json")))
    return parts


def dit_parts(scratch: Path, python: str, wheels: tuple[Path, ...]) -> list[Part]:
    """Issue 17's H200 rows: Flux-dev and SD3-medium latency against plain diffusers, then serving Flux."""
    parts = setup_parts(scratch, python, wheels)
    # 0. the families' CUDA correctness (tiny models, float32 against diffusers, CUDA graphs, offload, syncs)
    parts.append(pytest_part(python, "g-tests", "not compile", scratch / "g-junit.xml", cap_s=40,
                             result="g-tests.json", where="tests/gpu/test_cuda_transformers.py"))
    # 1. Flux-dev 1024², 28 steps, bf16: the published marks are 5.58 s (SDPA), 4.32 s (compiled), 3.50 s (FA3).
    #    The compiled row is a part of its own, so a cold compile past its cap keeps the eager numbers.
    for key, rows, cap in (("eager", "diffusers bf16 + SDPA (stacked),bf16 + SDPA", 90),
                           ("compile", "bf16 + SDPA + compile", 110)):
        folder = scratch / f"g-flux-{key}"
        parts.append(Part(
            f"g-flux-{key}", (python, *DIT_OPTIMIZATIONS, "--model", "flux-dev-random", "--only", rows,
                              "--compile-cache", str(scratch / "g-inductor"), "--out", str(folder)),
            cap_s=cap, result="g-flux.json", key=key,
            read=lambda folder=folder: read_json(folder / "optimizations.json")))
    # 2. SD3-medium 1024², 28 steps with guidance: latency against plain diffusers
    parts.append(Part(
        "g-sd3", (python, *DIT_OPTIMIZATIONS, "--model", "sd3-medium-random", "--only",
                  "diffusers bf16 + SDPA (stacked),bf16 + SDPA", "--out", str(scratch / "g-sd3")),
        cap_s=60, result="g-sd3.json", read=lambda: read_json(scratch / "g-sd3" / "optimizations.json")))
    # 3. serving Flux-dev: stacked against staged-step, 8 clients, at 512² and 1024²
    for size, cap in (("512", 80), ("1024", 80)):
        raw = scratch / f"g-serve-{size}.json"
        parts.append(Part(
            f"g-serve-{size}", (python, *DIT_SERVE, "--model", "flux-dev-random", "--size", f"{size}x{size}",
                                "--steps", "28", "--concurrency", "8", "--requests", "16", "--json", str(raw)),
            cap_s=cap, result="g-serve.json", key=size, read=lambda raw=raw: read_json(raw)))
    # 4. the few-step model: flux-schnell, 4 steps, no guidance, what a latency-first service runs
    raw = scratch / "g-schnell.json"
    parts.append(Part(
        "g-schnell", (python, *DIT_SERVE, "--model", "flux-schnell-random", "--size", "1024x1024", "--steps", "4",
                      "--concurrency", "1,8", "--requests", "16", "--json", str(raw)),
        cap_s=40, result="g-schnell.json", stretch=True, read=lambda: read_json(raw)))
    return parts


def pytest_part(python: str, name: str, marks: str, junit: Path, cap_s: int, result: str,
                key: str | None = None, where: str = "tests/gpu") -> Part:
    argv = (python, "-m", "pytest", where, "-m", marks, "-q", "-p", "no:cacheprovider", f"--junitxml={junit}")
    return Part(name, argv, cap_s=cap_s, result=result, key=key, read=lambda: junit_summary(junit))


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def junit_summary(path: Path) -> dict[str, Any]:
    """The JUnit XML pytest wrote, cut down to counts plus each failure's name and message."""
    root = ElementTree.parse(path).getroot()
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    failures, skipped = [], []
    for case in root.iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        outcome = next((child for child in case if child.tag in ("failure", "error", "skipped")), None)
        if outcome is None:
            counts["passed"] += 1
        elif outcome.tag == "skipped":
            counts["skipped"] += 1
            skipped.append({"name": name, "reason": outcome.get("message") or ""})
        else:
            counts["failed" if outcome.tag == "failure" else "errors"] += 1
            failures.append({"name": name, "kind": outcome.tag, "message": (outcome.get("message") or "")[:1000],
                             "details": (outcome.text or "")[-3000:]})  # the end of a traceback says the most
    seconds = sum(float(suite.get("time") or 0) for suite in root.iter("testsuite"))
    return {**counts, "seconds": round(seconds, 1), "failures": failures, "skipped_tests": skipped}


# ---------------------------------------------------------------------------------------------------------------
# The plan: what runs, for how long at most, and which files come back


def planned_files(parts: list[Part]) -> list[str]:
    return list(dict.fromkeys([SUMMARY, LOG, *(part.result for part in parts if part.result)]))


def check_plan(parts: list[Part]) -> None:
    """Raise ``ValueError`` for a plan that could not come back whole (too many files, or files in folders)."""
    names = [part.name for part in parts]
    if len(set(names)) != len(names):
        raise ValueError(f"part names must be unique, got {names}")
    for part in parts:
        if part.cap_s <= 0:
            raise ValueError(f"`cap_s` of part {part.name!r} must be positive, got {part.cap_s}")
        if part.result is not None and not FILE_NAME.match(part.result):
            raise ValueError(f"`result` of part {part.name!r} must be a plain file name, got {part.result!r}")
    files = planned_files(parts)
    if len(files) > MAX_FILES:
        raise ValueError(f"the plan writes {len(files)} files but only {MAX_FILES} come back: {files}")


def format_plan(parts: list[Part], budget_s: float, out: Path) -> str:
    """The plan as text; a part marked ``*`` runs only if the parts before it end before their caps."""
    files = planned_files(parts)
    total = sum(part.cap_s for part in parts)
    lines = [f"gpu-check plan: {len(parts)} parts, caps add up to {total} s of the {budget_s:g} s budget",
             f"output folder: {out} ({len(files)} files, at most {MAX_FILES} come back): {', '.join(files)}"]
    committed = 0
    for part in parts:
        committed += part.cap_s
        mark = "*" if committed > budget_s else " "
        target = f"{part.result}[{part.key}]" if part.key else (part.result or "-")
        cap = f"{part.cap_s:>4} s{'+' if part.stretch else ' '}"
        lines.append(f" {mark}{part.name:<16} {cap} -> {target:<23} {shlex.join(part.argv)}")
    if total > budget_s:
        lines.append("* over the budget if every part before it uses its whole cap: skipped unless time is left")
    if any(part.stretch for part in parts):
        lines.append("+ may also use what the parts before it leave unused, short of the caps of the parts after it")
    return "\n".join(lines)


def select_parts(parts: list[Part], wanted: str, caps: list[str]) -> list[Part]:
    """``--parts a,e`` keeps the setup, the probe and the parts whose names start so; ``--cap NAME=S`` resizes one
    (a later window can give the compile part the time this one could not)."""
    if wanted:
        prefixes = tuple(name.strip() for name in wanted.split(",") if name.strip())
        parts = [part for part in parts if part.name in ("setup", "probe") or part.name.startswith(prefixes)]
    for item in caps:
        name, _, seconds = item.partition("=")
        if not seconds.isdigit() or name not in {part.name for part in parts}:
            raise ValueError(f"`--cap` must be NAME=SECONDS with NAME one of {[p.name for p in parts]}, got {item!r}")
        parts = [dataclasses.replace(p, cap_s=int(seconds)) if p.name == name else p for p in parts]
    return parts


# ---------------------------------------------------------------------------------------------------------------
# Running: one part at a time, each in its own process group


class Log:
    """``log.txt``: every line of every part, prefixed with its name, and echoed to stdout (the device tool returns
    the tail of stdout, the log comes back whole)."""

    def __init__(self, path: Path, max_bytes: int = MAX_LOG_BYTES) -> None:
        self._file = path.open("a", encoding="utf-8")
        self._max_bytes = max_bytes
        self._written = path.stat().st_size
        self._lock = threading.Lock()  # the driver and a part's reader thread both write

    def line(self, prefix: str, text: str) -> None:
        text = f"[{prefix}] {text.rstrip()}\n"
        with self._lock:
            print(text, end="", flush=True)
            if self._written >= self._max_bytes:
                return
            if self._written + len(text) >= self._max_bytes:
                text = f"[check] log.txt is full ({self._max_bytes} bytes): later lines only on stdout\n"
            self._file.write(text)
            self._file.flush()
            self._written += len(text.encode("utf-8", "replace"))

    def close(self) -> None:
        self._file.close()


def run_part(part: Part, env: dict[str, str], log: Log) -> tuple[str, int | None, str | None]:
    """Run ``part`` in a new process group; past its cap, kill the whole group. Returns (status, exit code, reason)."""
    # A new process group, not a new session: the group can be killed whole, and if the driver itself is killed
    # (the device command's limit), its session's leftovers go with it instead of running on with the GPU.
    try:
        proc = subprocess.Popen(part.argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, process_group=0)
    except OSError as exc:
        return "failed", None, f"could not start: {exc}"
    reader = threading.Thread(target=_pump, args=(proc.stdout, part.name, log), daemon=True)
    reader.start()
    timed_out = False
    try:
        proc.wait(timeout=part.cap_s)
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        # Also after a clean exit: what the part left running (compile workers, a bench's spawned rows) would hold
        # GPU memory into the next part, and keep the output pipe open.
        _end_group(proc)
    reader.join(timeout=KILL_GRACE_S)
    if timed_out:
        return "timed_out", proc.returncode, f"killed after its cap of {part.cap_s} s"
    return ("ok" if proc.returncode == 0 else "failed"), proc.returncode, None


def _pump(stream: IO[bytes], name: str, log: Log) -> None:
    for raw in iter(stream.readline, b""):
        log.line(name, raw.decode("utf-8", "replace"))
    stream.close()


def _end_group(proc: subprocess.Popen) -> None:
    group = proc.pid  # process_group=0: the leader's pid is the group's id
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(group, sig)
        except ProcessLookupError:
            break  # nobody left in the group
        deadline = time.monotonic() + KILL_GRACE_S
        while time.monotonic() < deadline and _group_alive(proc, group):
            time.sleep(0.05)
        if not _group_alive(proc, group):
            break
    try:
        proc.wait(timeout=KILL_GRACE_S)
    except subprocess.TimeoutExpired:
        pass  # unkillable (stuck in the driver): reported by its status, nothing more to do


def _group_alive(proc: subprocess.Popen, group: int) -> bool:
    proc.poll()  # reap the leader, else it stays a zombie member of its own group
    try:
        pids = [int(pid) for pid in os.listdir("/proc") if pid.isdigit()]
    except OSError:
        pids = None
    if pids is None:  # no /proc: ask the kernel, counting zombies as alive
        try:
            os.killpg(group, 0)
            return True
        except ProcessLookupError:
            return False
    # Orphaned grandchildren are reaped by PID 1, which in a container may never do it: a zombie holds nothing.
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == group:  # fields: state, ppid, pgrp, ...
            return True
    return False


class Results:
    """The output folder: the summary and the parts' result files, each rewritten whole after every part."""

    def __init__(self, out: Path, summary: dict[str, Any]) -> None:
        self.out = out
        self.summary = summary
        self._files: dict[str, dict[str, Any]] = {}  # shared result files, filled key by key

    def put(self, part: Part, value: Any) -> None:
        if part.result == SUMMARY:
            self.summary[part.key or part.name] = value
        elif part.key is None:
            write_json(self.out / part.result, value)
        else:
            self._files.setdefault(part.result, {})[part.key] = value
            write_json(self.out / part.result, self._files[part.result])

    def record(self, outcome: dict[str, Any]) -> None:
        self.summary["parts"] = [outcome if p["name"] == outcome["name"] else p for p in self.summary["parts"]]
        self.save()

    def save(self) -> None:
        write_json(self.out / SUMMARY, self.summary)


def write_json(path: Path, value: Any) -> None:
    # Written aside and renamed: a driver killed mid-write (the window closing) leaves the previous whole file.
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(value, indent=2, default=str) + "\n")
    os.replace(partial, path)


def run_check(parts: list[Part], out: Path, budget_s: float, env: dict[str, str],
              extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run ``parts`` in order inside ``budget_s`` seconds; return the summary (also in ``out/gpu-check.json``)."""
    started = time.monotonic()
    check_plan(parts)
    out.mkdir(parents=True, exist_ok=True)
    log = Log(out / LOG)
    outcomes = [{"name": p.name, "command": shlex.join(p.argv), "cap_s": p.cap_s, "result_file": p.result,
                 "status": "pending"} for p in parts]
    results = Results(out, {"created": _now(), "finished": False, "budget_s": budget_s, "elapsed_s": 0.0,
                            "files": planned_files(parts), "machine": None, **(extra or {}), "parts": outcomes})
    results.save()  # before anything runs: a window that closes early still shows the plan
    try:
        for part in parts:
            left = budget_s - (time.monotonic() - started)
            if part.stretch:
                later = sum(p.cap_s for p in parts[parts.index(part) + 1:])
                part = dataclasses.replace(part, cap_s=max(part.cap_s, int(left - later)))
            outcome = next(o for o in outcomes if o["name"] == part.name) | {"status": "skipped", "cap_s": part.cap_s}
            if part.cap_s > left:
                outcome["reason"] = f"its cap of {part.cap_s} s does not fit in the {left:.0f} s left of the budget"
                log.line("check", f"{part.name}: skipped: {outcome['reason']}")
            else:
                log.line("check", f"{part.name}: start, cap {part.cap_s} s, {left:.0f} s left: "
                                  f"{shlex.join(part.argv)}")
                begun = time.monotonic()
                status, code, reason = run_part(part, env, log)
                outcome.update(status=status, seconds=round(time.monotonic() - begun, 1), exit_code=code)
                if reason:
                    outcome["reason"] = reason
                if part.read is not None:
                    try:
                        results.put(part, part.read())
                    except Exception as exc:  # noqa: BLE001 - a part that wrote nothing readable is a finding
                        outcome["result_error"] = f"{type(exc).__name__}: {exc}"
                log.line("check", f"{part.name}: {status} in {outcome['seconds']} s (exit {code})"
                                  + (f"; no result: {outcome['result_error']}" if "result_error" in outcome else ""))
            results.summary["elapsed_s"] = round(time.monotonic() - started, 1)
            results.record(outcome)
        results.summary["finished"] = True
        results.save()
    finally:
        log.close()
    return results.summary


# ---------------------------------------------------------------------------------------------------------------
# The command line


def cuda_present() -> bool:
    """Whether a CUDA GPU answers: nvidia-smi first (quick), then torch itself, since a GPU host without nvidia-smi
    on its PATH must not turn the whole window into a dry run."""
    probes = (["nvidia-smi", "-L"],
              [sys.executable, "-c", "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"])
    for command in probes:
        try:
            if subprocess.run(command, capture_output=True, timeout=60).returncode == 0:
                return True
        except (OSError, subprocess.SubprocessError):
            continue
    return False


def part_env(scratch: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "OUT"}  # a part writing to $OUT adds files
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1", PYTHONUNBUFFERED="1",
               TRANSFORMERS_VERBOSITY="error", MPLBACKEND="Agg", TORCHINDUCTOR_CACHE_DIR=str(scratch / "inductor"))
    # baton from this tree (no install there), then the carried wheels, then whatever the host had
    paths = [str(ROOT / "src"), str(scratch / "site"), os.environ.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(path for path in paths if path)
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET_S,
                        help="seconds for the whole check; a part whose cap does not fit in what is left is skipped "
                             "(the device tool stops a command at 600 s)")
    parser.add_argument("--out", type=Path, default=None, help="output folder when $OUT is not set (default: "
                                                                "benchmarks/results/gpu-check-DATE)")
    parser.add_argument("--scratch", type=Path, default=None, help="raw outputs (default: a new temporary folder)")
    parser.add_argument("--wheels", type=Path, default=ROOT / ".whl", help="wheels to install first, if present")
    parser.add_argument("--suite", choices=SUITES, default="default",
                        help="default: the check every GPU task runs; dit: issue 17's SD3 / Flux rows")
    parser.add_argument("--parts", default="", help="comma-separated name prefixes of the parts to run, e.g. a,e")
    parser.add_argument("--cap", action="append", default=[], metavar="NAME=SECONDS", help="resize one part's cap")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    args = parser.parse_args(argv)

    out = Path(os.environ.get("OUT") or args.out or ROOT / f"benchmarks/results/gpu-check-{_stamp()}")
    dry_run = args.dry_run or not cuda_present()
    # the dry run creates nothing, so its commands name the scratch folder by a placeholder
    scratch = Path("<scratch>") if dry_run else (args.scratch or Path(tempfile.mkdtemp(prefix="baton-gpu-check-")))
    wheels = tuple(sorted(args.wheels.glob("*.whl"))) if args.wheels.is_dir() else ()
    try:
        parts = select_parts(gpu_parts(scratch, sys.executable, wheels, args.suite), args.parts, args.cap)
        check_plan(parts)
    except ValueError as exc:
        print(f"gpu-check: error: {exc}", file=sys.stderr)
        return 2
    print(format_plan(parts, args.budget, out))
    if dry_run:
        print("dry run: " + ("--dry-run given" if args.dry_run else "no CUDA GPU answers here (nvidia-smi -L, torch)")
              + "; nothing was run")
        return 0
    if not wheels:
        print(f"no wheels in {args.wheels}: the parts use the host's packages (diffusers must be installed there)")

    scratch.mkdir(parents=True, exist_ok=True)
    # SIGTERM as an exception, so the running part's group is killed on the way out (run_part's finally)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    summary = run_check(parts, out, args.budget, part_env(scratch), extra={
        "out": str(out), "scratch": str(scratch), "git_commit": _git_commit(), "argv": sys.argv,
        "setup": {"wheels": [], "note": f"no wheels in {args.wheels}: the host's own packages"}})
    print(f"\ngpu-check: {summary['elapsed_s']} s of {args.budget:g}; results in {out}")
    for outcome in summary["parts"]:
        print(f"  {outcome['name']:<16} {outcome['status']:<9} {outcome.get('seconds', '-')!s:>6} s"
              f"  {outcome.get('reason', '')}")
    return 0 if all(o["status"] == "ok" for o in summary["parts"]) else 1


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None  # the GPU host gets the working tree without .git
    return out.stdout.strip() or None


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _stamp() -> str:
    return datetime.datetime.now().strftime("%Y-%m-%d-%H%M")


if __name__ == "__main__":
    sys.exit(main())
