"""The shapes world: captions, exact renderings, the held-out split, and a detector that reads them back."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from baton.bench.image_metrics import psnr_db, ssim
from baton.shapes import COLOURS, SHAPES, Scene, caption, read_scene, render, sample_scenes, score


def test_captions_say_what_is_drawn():
    scene = Scene("green", "triangle", "small", 2, "top left")
    assert caption(scene) == "two small green triangles at the top left on a black background"
    assert caption(Scene("red", "circle", "large", 1, "center")) == (
        "one large red circle in the center on a black background"
    )


def test_scenes_are_seeded_and_the_held_out_combinations_never_reach_training():
    train = sample_scenes(500, seed=1)
    assert train == sample_scenes(500, seed=1) and train != sample_scenes(500, seed=2)
    held_out = sample_scenes(200, seed=3, held_out=True)
    assert not {s.combination for s in train} & {s.combination for s in held_out}
    assert all(s.held_out for s in held_out) and not any(s.held_out for s in train)
    assert {s.colour for s in held_out} == set(COLOURS) and {s.shape for s in held_out} == set(SHAPES)


def test_the_detector_reads_every_exact_rendering_correctly():
    misses = collections.Counter()
    scenes = sample_scenes(600, seed=11) + sample_scenes(200, seed=12, held_out=True)
    for scene in scenes:
        image = render(scene)
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8
        for attribute, right in score(scene, read_scene(image)).items():
            misses[attribute] += not right
    assert sum(misses.values()) == 0, misses


def test_the_detector_reports_what_is_wrong():
    asked = Scene("red", "square", "large", 3, "bottom right", layout_seed=4)
    drawn = Scene("orange", "circle", "large", 2, "top left", layout_seed=4)
    assert score(asked, read_scene(render(drawn))) == {
        "colour": False, "shape": False, "count": False, "size": True, "position": False,
    }
    empty = read_scene(np.zeros((64, 64, 3), np.uint8))
    assert empty.count == 0 and empty.colour is None
    # float pixels in [0, 1] and a little noise are read the same
    noisy = render(drawn) / 255.0 + np.random.default_rng(0).normal(0, 0.03, (64, 64, 3))
    assert score(drawn, read_scene(noisy)) == dict.fromkeys(("colour", "shape", "count", "size", "position"), True)


def test_psnr_and_ssim():
    image = render(Scene("blue", "diamond", "large", 1, "center")) / 255.0
    assert psnr_db(image, image) is None and ssim(image, image) == pytest.approx(1.0)
    noise = np.random.default_rng(0).normal(0, 0.05, image.shape)
    slightly, badly = np.clip(image + noise, 0, 1), np.clip(image + 4 * noise, 0, 1)
    assert psnr_db(image, slightly) > psnr_db(image, badly) > 0
    assert 1.0 > ssim(image, slightly) > ssim(image, badly) > 0
    with pytest.raises(ValueError, match="differ in shape"):
        ssim(image, image[:32])
