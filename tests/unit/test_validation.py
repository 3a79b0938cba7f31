"""One test per bad-input rule: refused with an error naming field and value, before any model work."""

import math

import pytest

from baton import Engine, InvalidRequestError, RequestLimits


@pytest.fixture(scope="module")
def engine():
    with Engine(models="tiny-sd15", device="cpu", limits=RequestLimits(max_size=512)) as engine:
        calls = {"text_encoder": 0}
        engine.runners["tiny-sd15"].pipeline.text_encoder.register_forward_pre_hook(
            lambda *_: calls.__setitem__("text_encoder", calls["text_encoder"] + 1)
        )
        engine.model_calls = calls
        yield engine


GOOD = dict(prompt="a red fox", width=64, height=64, steps=2, seed=0)


@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("prompt", "", "non-empty string"),
        ("prompt", "   ", "non-empty string"),
        ("prompt", 42, "non-empty string"),
        ("prompt", None, "non-empty string"),
        ("negative_prompt", ["no"], "string or None"),
        ("width", 100, "multiple of 8 between 64 and 512"),
        ("width", 56, "multiple of 8 between 64 and 512"),
        ("height", 520, "multiple of 8 between 64 and 512"),  # the configured max_size
        ("height", 64.0, "multiple of 8"),
        ("steps", 0, "between 1 and 200"),
        ("steps", 201, "between 1 and 200"),
        ("steps", True, "integer"),
        ("guidance_scale", math.nan, "finite number >= 0"),
        ("guidance_scale", math.inf, "finite number >= 0"),
        ("guidance_scale", -1.0, "finite number >= 0"),
        ("guidance_scale", "7", "finite number >= 0"),
        ("num_images", 0, "between 1 and 16"),
        ("num_images", 17, "between 1 and 16"),
        ("seed", -1, "integer between 0"),
        ("scheduler", "magic", "one of ['default', 'euler'"),
        ("model", "sd99", "one of the loaded models ['tiny-sd15']"),
        ("priority", 101, "between -100 and 100"),
        ("priority", 1.5, "integer between -100 and 100"),
        ("output_format", "gif", "one of ['png', 'jpeg', 'webp', 'np']"),
    ],
)
def test_bad_input_is_refused_before_any_model_work(engine, field, value, allowed):
    with pytest.raises(InvalidRequestError) as caught:
        engine.submit(**{**GOOD, field: value})
    error = caught.value
    assert error.field == field
    assert error.value == value or (isinstance(value, float) and math.isnan(value))
    assert f"`{field}`" in str(error) and allowed in str(error) and repr(value) in str(error)
    assert engine.pending == 0
    assert engine.model_calls["text_encoder"] == 0


def test_unknown_request_field_lists_the_known_ones(engine):
    with pytest.raises(TypeError, match="request fields are"):
        engine.submit(prompt="x", stpes=3)


def test_the_engine_keeps_serving_after_bad_input(engine):
    with pytest.raises(InvalidRequestError):
        engine.submit(**{**GOOD, "steps": -5})
    result = engine.generate(**GOOD)
    assert len(result.images) == 1 and result.images[0].size == (64, 64)
