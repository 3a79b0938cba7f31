"""Host syncs in the step loop: a guard that finds them on any machine, and an audit on a real GPU.

A host sync makes the Python thread wait until the GPU has drained a stream: a value read back (``.item()``,
``bool(t)``, a data-dependent shape such as ``nonzero``), a device-to-host copy, or a host-to-device copy that is
blocking or comes from pageable memory. One per step is enough to leave the GPU idle while the host prepares the
next forward, so baton's step loop (admission and every step, for every sampler) must have none.

- :class:`HostSyncGuard` finds them without a GPU. The step loop runs on the ``meta`` device (shapes, no data):
  the guard sees every aten op and flags reads of device tensors, host↔device copies that would block, and
  (when the device is CUDA) copies from memory that is not pinned. :func:`step_loop_syncs` runs it over baton's real
  denoise stage; the tests run it for every sampler, so a sync cannot come back unnoticed.
- :func:`audit_cuda` is the same question asked of a real GPU: ``torch.cuda.set_sync_debug_mode("warn")`` over
  one request per sampler through a real engine, each sync reported with its file:line and thread.

``python -m baton.bench.syncs --models tiny-sd15,tiny-sdxl --steps 10 --json syncs.json`` runs the audit on a GPU
and the guard elsewhere (``make gpu-check`` runs it as its part b).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import threading
import time
import traceback
import uuid
import warnings
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

logger = logging.getLogger(__name__)

aten = torch.ops.aten
# Matched by op, whatever the overload: under inference mode the guard sees composite ops (`to`, `item`,
# `linalg_solve`) before they decompose, elsewhere their parts (`_to_copy`, `_local_scalar_dense`, ...).
_READS = {  # ops whose result the host needs to go on: the value itself, or a shape that depends on the data
    aten._local_scalar_dense: "reads a device value on the host (.item(), bool(), int(), a comparison)",
    aten.item: "reads a device value on the host (.item())",
    aten.is_nonzero: "reads a device value on the host (bool())",
    aten.equal: "reads a device value on the host (torch.equal)",
    aten.nonzero: "data-dependent output shape (nonzero)",
    aten.masked_select: "data-dependent output shape (masked_select)",
    aten.linalg_solve: "reads linalg's error codes on the host (linalg.solve)",
    aten._linalg_check_errors: "reads linalg's error codes on the host (linalg.solve, inv, ...)",
}
_COPIES = (aten.to, aten._to_copy, aten.copy_)
_STEP_LOOP = {"_start", "_step", "_forward"}  # baton.stages.denoise functions: admission and the steps
_OWN_FILES = ("/torch/", "/bench/syncs.py", "/contextlib.py", "/threading.py", "/warnings.py")


@dataclass(frozen=True, slots=True)
class Sync:
    """One place where the host would wait for the device."""

    kind: str  # "read", "blocking copy", "pageable copy", "device-to-host copy", "cuda sync"
    detail: str  # the aten op and why it syncs, or the CUDA warning
    where: str  # file:line (function) of the innermost frame outside torch
    baton_frame: str | None  # the innermost frame in baton's own code
    thread: str
    in_step_loop: bool
    sampler: str = ""  # the sampler whose request was running, set by the caller


class HostSyncGuard(TorchDispatchMode):
    """Records every op that would make the host wait for ``device`` (use as a context manager).

    ``device`` is the device type the work runs on: ``meta`` for the CPU check (any real read of a meta tensor
    also fails outright), or ``cuda``. A host-to-device copy passes when it is ``non_blocking`` and, where CUDA
    exists to pin with (``device`` is ``cuda``), from pinned memory."""

    def __init__(self, device: str = "meta") -> None:
        super().__init__()
        self.device = device
        self.syncs: list[Sync] = []
        self.sampler = ""
        self._pinning = device == "cuda"  # a copy to any other device is never pinned (copy_to_device)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        problem = self._problem(func, args, kwargs)
        if problem is not None:
            self.syncs.append(_sync(*problem, sampler=self.sampler))
        return func(*args, **kwargs)

    def _problem(self, func, args, kwargs) -> tuple[str, str] | None:
        op = func.overloadpacket
        if op in _READS and _on(args[0], self.device):
            return "read", f"{func.name()}: {_READS[op]}"
        if op in _COPIES:
            named = {argument.name: value for argument, value in zip(func._schema.arguments, args)} | kwargs
            source = named["self"] if op is not aten.copy_ else named["src"]
            if op is aten.copy_:
                target = named["self"].device
            elif isinstance(named.get("other"), torch.Tensor):  # to(other)
                target = named["other"].device
            else:
                target = torch.device(named["device"]) if named.get("device") is not None else source.device
            return self._copy(func, source, target.type, bool(named.get("non_blocking", False)))
        return None

    def _copy(self, func, source: torch.Tensor, target_type: str, non_blocking: bool) -> tuple[str, str] | None:
        if source.device.type == "cpu" and target_type == self.device:
            if not non_blocking:
                return "blocking copy", f"{func.name()}: host-to-device copy without non_blocking"
            if self._pinning and not source.is_pinned():
                return "pageable copy", f"{func.name()}: non_blocking host-to-device copy from pageable memory"
        elif source.device.type == self.device and target_type == "cpu":
            return "device-to-host copy", f"{func.name()}: device-to-host copy"
        return None


def step_loop_syncs(model: str, samplers: tuple[str, ...] | None = None, steps: int = 4, size: int = 64,
                    num_images: int = 2) -> tuple[list[Sync], dict[str, str]]:
    """Run one request per sampler of ``model`` through baton's denoise stage on the ``meta`` device, all in one
    batch, under :class:`HostSyncGuard`; return the syncs found and each request that failed, with its error.

    The prompts are encoded before the guard starts (the text encoder is another stage); from admission (initial
    latents, conditioning, timesteps) to the last step, everything the step loop does is watched."""
    from baton.config import DenoiseConfig
    from baton.models import load_model
    from baton.models.runner import PromptInput
    from baton.request import GenerationRequest
    from baton.stages.denoise import DenoiseStage
    from baton.stages.job import Job

    device = torch.device("meta")
    runner = load_model(model, device, torch.float32)
    stage = DenoiseStage(DenoiseConfig(max_rows=64), device, 8, threading.Event(), lambda *_: None)
    jobs = []
    with torch.inference_mode():
        for index, sampler in enumerate(samplers or runner.schedulers.names):
            request = GenerationRequest(prompt=f"a red fox {index}", num_images=num_images, width=size, height=size,
                                        steps=steps, seed=index, scheduler=sampler, model=model,
                                        guidance_scale=runner.default_guidance_scale)
            job = Job(request, runner, Future(), request_id=f"{sampler}-{uuid.uuid4().hex[:6]}", seed=index,
                      submitted_at=time.perf_counter())
            guided = runner.uses_guidance(request.guidance_scale)
            [job.embeddings] = runner.encode([PromptInput(request.prompt, None, guided)])
            jobs.append(job)
        guard = HostSyncGuard("meta")
        guard.sampler = samplers[0] if samplers and len(samplers) == 1 else ""
        with guard:
            stage.run_now(jobs)
    failures = {job.request.scheduler: repr(job.future.exception()) for job in jobs
                if job.future.done() and job.future.exception() is not None}
    return guard.syncs, failures


class CudaSyncAudit:
    """``torch.cuda.set_sync_debug_mode("warn")`` while active, each warning recorded as a :class:`Sync` with the
    stack and thread it came from (from any thread: the engine's stages run on their own)."""

    def __init__(self) -> None:
        self.syncs: list[Sync] = []
        self.sampler = ""
        self._lock = threading.Lock()

    @contextmanager
    def active(self) -> Iterator[CudaSyncAudit]:
        previous_mode = torch.cuda.get_sync_debug_mode()
        with warnings.catch_warnings():
            warnings.simplefilter("always")  # every occurrence, not the first per location
            previous_show = warnings.showwarning
            warnings.showwarning = self._record
            torch.cuda.set_sync_debug_mode("warn")
            try:
                yield self
            finally:
                torch.cuda.set_sync_debug_mode(previous_mode)
                torch.cuda.synchronize()  # (after the mode is back: this wait is the audit's own)
                warnings.showwarning = previous_show

    def _record(self, message, category, filename, lineno, file=None, line=None) -> None:
        text = str(message)
        if "synchroniz" not in text:  # other warnings raised meanwhile are not syncs
            logger.warning("%s:%s: %s", filename, lineno, text)
            return
        with self._lock:
            self.syncs.append(_sync("cuda sync", text.splitlines()[0], sampler=self.sampler))


def audit_cuda(models: tuple[str, ...], steps: int = 10, size: int | None = None) -> list[dict]:
    """One request per sampler of each model through a real engine on CUDA, under :class:`CudaSyncAudit`.

    Each model first serves one request outside the audit, so one-time initialization (cuBLAS handles, lazy
    module state) is not counted; the requests then run one at a time, so each sync is labelled with its sampler."""
    from baton.engine import Engine

    results = []
    for model in models:
        audit = CudaSyncAudit()
        with Engine(models=model, device="cuda") as engine:
            runner = engine.runners[model]
            side = size or runner.default_size
            engine.generate(prompt="warm-up", steps=2, width=side, height=side, seed=0)
            with audit.active():
                for sampler in runner.schedulers.names:
                    audit.sampler = sampler
                    engine.generate(prompt="a red fox", steps=steps, width=side, height=side, seed=1,
                                    scheduler=sampler, num_images=2)
            results.append(_model_result(model, runner.schedulers.names, runner.schedulers.unsupported, audit.syncs,
                                         {}))
    return results


def audit_meta(models: tuple[str, ...], steps: int = 10) -> list[dict]:
    """:func:`step_loop_syncs` for each model and sampler, one sampler at a time so each sync is labelled with its
    own (the tests batch them all together too). Samplers refused on CUDA are audited as well, to show why."""
    from baton.models import load_model
    from baton.models.schedulers import unsupported_samplers

    results = []
    for model in models:
        runner = load_model(model, torch.device("meta"), torch.float32)
        syncs, failures = [], {}
        for sampler in runner.schedulers.names:
            found, failed = step_loop_syncs(model, (sampler,), steps=steps)
            syncs += found
            failures.update(failed)
        scheduler = runner.pipeline.scheduler
        refused_on_cuda = unsupported_samplers(scheduler.config, torch.device("cuda"), type(scheduler))
        results.append(_model_result(model, runner.schedulers.names, refused_on_cuda, syncs, failures))
    return results


def _model_result(model: str, samplers, refused: dict[str, str], syncs: list[Sync],
                  failures: dict[str, str]) -> dict:
    """One model's findings; identical syncs (same sampler, place and kind) are listed once with their count.
    ``step_loop_syncs`` counts those of the samplers baton serves on CUDA (the refused ones show why they are)."""
    counts = Counter(syncs)
    return {
        "model": model,
        "samplers": list(samplers),
        "refused_on_cuda": dict(refused),
        "failed": failures,
        "step_loop_syncs": sum(sync.in_step_loop and sync.sampler not in refused for sync in syncs),
        "syncs": [{**asdict(sync), "count": count} for sync, count in counts.items()],
    }


def _sync(kind: str, detail: str, sampler: str) -> Sync:
    stack = traceback.extract_stack()
    outside = [frame for frame in stack if not any(part in frame.filename for part in _OWN_FILES)]
    ours = [frame for frame in outside if "/baton/" in frame.filename]
    in_loop = any(frame.name in _STEP_LOOP and frame.filename.endswith("stages/denoise.py") for frame in stack)
    return Sync(kind, detail, _frame(outside[-1]) if outside else "?", _frame(ours[-1]) if ours else None,
                threading.current_thread().name, in_loop, sampler)


def _frame(frame: traceback.FrameSummary) -> str:
    """``file:line (function)``, the file named from its package (or the working directory), not the disk."""
    path = frame.filename
    for root in ("/site-packages/", "/src/"):
        if root in path:
            path = path.split(root)[-1]
            break
    else:
        if path.startswith(os.getcwd() + os.sep):
            path = os.path.relpath(path)
    return f"{path}:{frame.lineno} ({frame.name})"


def _on(tensor: object, device: str) -> bool:
    return isinstance(tensor, torch.Tensor) and tensor.device.type == device


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m baton.bench.syncs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="tiny-sd15,tiny-sdxl,tiny-lcm", help="comma-separated model names")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--device", default="auto", choices=("auto", "cuda", "meta"),
                        help="cuda: the sync debug mode on a real GPU; meta: the guard (any machine)")
    parser.add_argument("--json", type=Path, default=None, help="write the report here")
    args = parser.parse_args(argv)
    from baton.bench.machine import describe_machine

    models = tuple(name.strip() for name in args.models.split(",") if name.strip())
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    results = audit_cuda(models, args.steps) if cuda else audit_meta(models, args.steps)
    report = {
        "benchmark": "syncs",
        "method": "torch.cuda.set_sync_debug_mode('warn') through a real engine" if cuda
        else "HostSyncGuard over the denoise stage on the meta device",
        "machine": describe_machine("cuda" if cuda else "meta"),
        "settings": {"models": list(models), "steps": args.steps},
        "step_loop_syncs": sum(result["step_loop_syncs"] for result in results),
        "results": results,
    }
    for result in results:
        refused = sorted(result["refused_on_cuda"])
        served = [name for name in result["samplers"] if name not in refused]
        elsewhere = sum(sync["count"] for sync in result["syncs"]) - result["step_loop_syncs"]
        refused_note = f" or in those refused there ({', '.join(refused)})" if refused else ""
        print(f"{result['model']}: {result['step_loop_syncs']} sync(s) in the step loop of the samplers served on "
              f"CUDA ({', '.join(served)}); {elsewhere} elsewhere{refused_note}")
        for sync in result["syncs"]:
            print(f"  {sync['count']:>3} x [{sync['sampler'] or '-'}] {sync['kind']} in {sync['thread']} at "
                  f"{sync['where']} (baton: {sync['baton_frame']}): {sync['detail']}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    return 1 if report["step_loop_syncs"] else 0  # a sync in the step loop is a failure, also for make gpu-check


if __name__ == "__main__":
    raise SystemExit(main())
