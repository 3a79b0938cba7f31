"""What the GPU check ran on: versions, the card and driver, TF32 flags and which attention kernels really run.

Usage: ``python benchmarks/gpu/probe.py PATH`` writes one JSON object to PATH. ``check.py`` runs it as its own
capped part (importing torch and starting CUDA can hang on a sick machine) after the wheels are installed, so the
diffusers version it records is the one the other parts import. Every field is read on its own: one missing
package or failing kernel is recorded, never fatal.
"""

from __future__ import annotations

import csv
import importlib
import json
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any


def probe() -> dict[str, Any]:
    machine: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform(),
                               "executable": sys.executable}
    # 1. versions: the module actually imported (and where from), so a carried wheel shadowing nothing shows
    for name in ("torch", "diffusers", "transformers", "huggingface_hub", "accelerate", "numpy"):
        try:
            module = importlib.import_module(name)
            machine[name] = getattr(module, "__version__", "?")
            machine[f"{name}_path"] = str(Path(module.__file__).parent)
        except Exception as exc:  # noqa: BLE001 - any import failure is a finding to record
            machine[name] = f"unavailable: {type(exc).__name__}: {exc}"
    machine["nvidia_smi"] = _nvidia_smi()
    try:
        import torch
    except ImportError:
        return machine

    # 2. the card as torch sees it
    machine["cuda_available"] = torch.cuda.is_available()
    machine["cuda"] = torch.version.cuda
    machine["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        machine["gpu"] = props.name
        machine["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        machine["capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))

    # 3. TF32: torch's default keeps cuDNN TF32 on, so "float32" convolutions round unless someone turns it off
    machine["tf32"] = {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32}

    # 4. attention: "enabled" only says torch may pick a backend; running each one says whether it can
    machine["sdpa_enabled"] = {
        "flash": torch.backends.cuda.flash_sdp_enabled(),
        "mem_efficient": torch.backends.cuda.mem_efficient_sdp_enabled(),
        "cudnn": torch.backends.cuda.cudnn_sdp_enabled(),
        "math": torch.backends.cuda.math_sdp_enabled(),
    }
    if torch.cuda.is_available():
        machine["sdpa_runs_fp16"] = _sdpa_runs(torch)
    return machine


def _sdpa_runs(torch) -> dict[str, Any]:
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.functional import scaled_dot_product_attention

    backends = {"flash": SDPBackend.FLASH_ATTENTION, "mem_efficient": SDPBackend.EFFICIENT_ATTENTION,
                "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}
    q = torch.randn(1, 8, 256, 64, device="cuda", dtype=torch.float16)  # [B, heads, tokens, head_dim]
    runs: dict[str, Any] = {}
    for name, backend in backends.items():
        try:
            with sdpa_kernel(backend):
                out = scaled_dot_product_attention(q, q, q)
            torch.cuda.synchronize()
            runs[name] = bool(torch.isfinite(out).all())
        except Exception as exc:  # noqa: BLE001 - "this kernel does not run here" is the answer we want
            runs[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
    return runs


def _nvidia_smi() -> Any:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unavailable: {exc}"
    if out.returncode != 0:
        return f"unavailable: exit {out.returncode}: {out.stderr.strip()[:200]}"
    rows = list(csv.reader(out.stdout.strip().splitlines()))
    header = [cell.strip() for cell in rows[0]]
    return [dict(zip(header, (cell.strip() for cell in row))) for row in rows[1:]]


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: probe.py PATH")
    result = probe()
    Path(sys.argv[1]).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
