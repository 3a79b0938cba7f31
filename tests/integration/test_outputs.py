"""What a result carries: images in the asked format, and per-stage timings."""

import io

import numpy as np
import pytest
from PIL import Image


@pytest.mark.parametrize(("output_format", "pil_format"), [("png", "PNG"), ("jpeg", "JPEG"), ("webp", "WEBP")])
def test_encoded_images_decode_back_to_the_right_size(sd15_engine, output_format, pil_format):
    result = sd15_engine.generate(prompt="a fox", width=96, height=64, steps=2, num_images=2, seed=3,
                                  output_format=output_format)
    assert len(result.encoded) == 2 and result.pixels is None
    for data, image in zip(result.encoded, result.images):
        decoded = Image.open(io.BytesIO(data))
        assert decoded.format == pil_format and decoded.size == (96, 64) == image.size
    if output_format == "png":  # lossless: the bytes hold exactly the PIL image
        assert (np.asarray(Image.open(io.BytesIO(result.encoded[0]))) == np.asarray(result.images[0])).all()


def test_results_carry_the_seed_and_every_stage_timing(sd15_engine):
    result = sd15_engine.generate(prompt="a fox", width=64, height=64, steps=2)
    assert 0 <= result.seed < 2**31
    assert list(result.timings) == ["text_encode", "denoise", "vae_decode", "image_encode"]
    for timing in result.timings.values():
        assert timing.queue_wait_s >= 0 and timing.run_s > 0 and timing.batch_images >= 1
    assert result.latency_s >= sum(t.run_s for t in result.timings.values()) * 0.5


def test_the_same_seed_gives_the_same_image_and_another_seed_does_not(sd15_engine):
    a = sd15_engine.generate(prompt="a fox", width=64, height=64, steps=2, seed=5, output_format="np").pixels
    b = sd15_engine.generate(prompt="a fox", width=64, height=64, steps=2, seed=5, output_format="np").pixels
    c = sd15_engine.generate(prompt="a fox", width=64, height=64, steps=2, seed=6, output_format="np").pixels
    assert (a == b).all() and not (a == c).all()


@pytest.mark.parametrize("mode", ["staged", "stacked"])
def test_a_cut_prompt_is_reported_in_the_result_and_nothing_is_logged_per_request(mode, caplog, recwarn):
    from baton import Engine

    long_prompt = " ".join(["red"] * 60)  # byte-level tokens: 3 a word, 180 in all; CLIP reads 75
    with Engine(models="tiny-sd15", device="cpu", mode=mode) as engine:
        caplog.clear()
        recwarn.clear()
        with caplog.at_level("DEBUG"):
            result = engine.generate(prompt=long_prompt, negative_prompt="blue", steps=2, width=64, height=64)
            short = engine.generate(prompt="red", steps=2, width=64, height=64)
    assert result.warnings == ["`prompt` has 180 tokens; the text encoder read the first 75 and ignored the rest"]
    assert short.warnings == []
    # diffusers would log its own notice, the cut text included, for every such request
    assert [record for record in caplog.records if record.levelno >= 20] == []
    assert list(recwarn) == []
