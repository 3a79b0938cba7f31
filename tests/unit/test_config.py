import pytest

from baton import DenoiseConfig, EngineConfig, RequestLimits, StageConfig
from baton.device import resolve_device, resolve_dtype
from baton.request import parse_size


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


def test_each_model_gets_a_size_limit_that_fits_it():
    limits = RequestLimits()
    assert limits.max_size_for("shapes", native_size=64) == 128
    assert limits.max_size_for("sdxl", native_size=1024) == 2048
    assert limits.max_size_for("folder", native_size=512, folder_max_size=768) == 768
    assert RequestLimits(max_size=256).max_size_for("folder", 512, folder_max_size=768) == 256
    pinned = RequestLimits(max_size=256, model_max_size=(("shapes", 96),))
    assert pinned.max_size_for("shapes", 64) == 96 and pinned.max_size_for("other", 64) == 256
    with pytest.raises(ValueError, match="model_max_size"):
        RequestLimits(model_max_size=(("shapes", 8),))


@pytest.mark.parametrize("text", [" 64x64", "64X64", "６４x６４", "64x", "x64", "64x64x64", "1234567x8", "", "auto"])
def test_a_size_is_exactly_width_x_height_in_ascii_digits(text):
    with pytest.raises(ValueError, match="WIDTHxHEIGHT"):
        parse_size(text)


def test_a_size_parses():
    assert parse_size("512x768") == (512, 768)


@pytest.mark.parametrize("field", ["max_steps", "max_images"])
def test_request_limits_refuse_a_limit_below_one(field):
    with pytest.raises(ValueError, match=field):
        RequestLimits(**{field: 0})
