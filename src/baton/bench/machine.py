"""What a benchmark ran on: every result file carries this, so numbers are never separated from their machine."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any


def describe_machine(device: str) -> dict[str, Any]:
    import diffusers
    import torch
    import transformers

    from baton import __version__

    machine: dict[str, Any] = {
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join(["baton", *sys.argv[1:]]) if Path(sys.argv[0]).name == "baton" else " ".join(sys.argv),
        "baton": __version__,
        "git_commit": _git_commit(),
        "device": device,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "cpu": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gib": _memory_gib(),
        "tf32": tf32_settings(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        machine["gpu"] = props.name
        machine["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        machine["cuda"] = torch.version.cuda
    return machine


def tf32_settings() -> dict[str, Any]:
    """The TF32 switches in force in this process: whether "float32" matmuls and convolutions on CUDA run as
    TF32 (torch's defaults: matmul off, cuDNN on), and the matmul precision they imply."""
    import torch

    with warnings.catch_warnings():  # newer torch warns that these legacy switches are being replaced
        warnings.simplefilter("ignore")
        return {
            "matmul": bool(torch.backends.cuda.matmul.allow_tf32),
            "cudnn": bool(torch.backends.cudnn.allow_tf32),
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
        }


def strict_float32(dtype, device) -> bool:
    """Turn TF32 off when a process computes in float32 on CUDA, so a float32 row is float32 (cuDNN's default is
    TF32 convolutions); call it before any model is built. Returns whether it changed anything."""
    import torch

    if device.type != "cuda" or dtype != torch.float32:
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    return True


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None
