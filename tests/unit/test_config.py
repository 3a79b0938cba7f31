import pytest

from baton import DenoiseConfig, EngineConfig, RequestLimits, StageConfig
from baton.device import resolve_device, resolve_dtype


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"mode": "fast"}, "mode"),
        ({"dtype": "int8"}, "dtype"),
        ({"device": "tpu"}, "device"),
        ({"max_queue": 0}, "max_queue"),
        ({"stage_queue_size": 0}, "stage_queue_size"),
        ({"image_workers": 0}, "image_workers"),
        ({"gil_switch_interval_s": 0.0}, "gil_switch_interval_s"),
        ({"models": ()}, "models"),
    ],
)
def test_engine_config_names_the_bad_field(kwargs, field):
    with pytest.raises(ValueError, match=f"`{field}`"):
        EngineConfig(**kwargs)


def test_a_single_model_name_becomes_a_tuple():
    assert EngineConfig(models="tiny-sdxl").models == ("tiny-sdxl",)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"max_batch_images": 0}, "max_batch_images"), ({"max_wait_s": -1.0}, "max_wait_s")],
)
def test_stage_config_names_the_bad_field(kwargs, field):
    with pytest.raises(ValueError, match=f"`{field}`"):
        StageConfig(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"batching": "token"}, "batching"),
        ({"max_rows": 0}, "max_rows"),
        ({"max_wait_s": -0.1}, "max_wait_s"),
        ({"priority_aging_s": 0.0}, "priority_aging_s"),
        ({"cpu_threads": 0}, "cpu_threads"),
    ],
)
def test_denoise_config_names_the_bad_field(kwargs, field):
    with pytest.raises(ValueError, match=f"`{field}`"):
        DenoiseConfig(**kwargs)


def test_request_limits_must_be_consistent():
    with pytest.raises(ValueError, match="`max_size`"):
        RequestLimits(min_size=512, max_size=256)


def test_cuda_is_refused_where_there_is_none():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"


def test_float16_on_cpu_is_refused_and_auto_is_float32():
    import torch

    with pytest.raises(ValueError, match="float16"):
        resolve_dtype("float16", torch.device("cpu"))
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16
