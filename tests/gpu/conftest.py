"""CUDA tests compare against float32 references, so float32 must mean float32 here.

torch's default leaves cuDNN's TF32 on: "float32" convolutions would round their inputs to 10 mantissa bits and
the references would drift by ~1e-3, far past the tolerances these tests hold. Package scope, so the switch is in
place before the module-scoped reference fixtures run, and restored after the last CUDA test.
"""

import pytest
import torch


@pytest.fixture(scope="package", autouse=True)
def float32_without_tf32():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
