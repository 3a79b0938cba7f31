"""Procedural scenes: one colour, one shape, one size, 1-3 objects, one region of a 64x64 black canvas.

Every scene has an exact caption ("two small green triangles at the top left on a black background") and an
exact rendering (PIL, no anti-aliasing). Scenes are drawn from a seeded generator, so a dataset is its seed.
A fixed tenth of the attribute combinations is held out (chosen by a hash of the combination): training never
sees them, and the quality benchmark's prompts come from them, so the model is judged on captions it has not
seen.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

CANVAS = 64
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 25, 25),
    "green": (30, 200, 40),
    "blue": (40, 70, 240),
    "yellow": (240, 230, 30),
    "cyan": (30, 220, 230),
    "magenta": (230, 40, 220),
    "white": (245, 245, 245),
    "orange": (250, 140, 20),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")
SIZES: dict[str, int] = {"small": 8, "large": 12}  # bounding-box side in pixels
GAP = 3  # pixels at least between neighbours: a VAE that downsamples by 4 blurs a 1-pixel gap shut
COUNTS: dict[int, str] = {1: "one", 2: "two", 3: "three"}
# each region is a 32x32 square of the canvas, split in four 16x16 cells that hold at most one object each
POSITIONS: dict[str, tuple[int, int]] = {
    "top left": (0, 0), "top right": (32, 0), "bottom left": (0, 32), "bottom right": (32, 32), "center": (16, 16),
}
HOLDOUT_FRACTION = 0.1


@dataclass(frozen=True, slots=True)
class Scene:
    colour: str
    shape: str
    size: str
    count: int
    position: str
    layout_seed: int = 0
    """Where in the region the objects go (which cells, and a jitter inside each)."""

    @property
    def combination(self) -> tuple[str, str, str, int, str]:
        return (self.colour, self.shape, self.size, self.count, self.position)

    @property
    def held_out(self) -> bool:
        """In the held-out tenth of combinations (never trained on)."""
        digest = hashlib.sha256(repr(self.combination).encode()).digest()
        return digest[0] < 256 * HOLDOUT_FRACTION


def caption(scene: Scene) -> str:
    """E.g. "two small green triangles at the top left on a black background"."""
    noun = scene.shape + ("s" if scene.count > 1 else "")
    where = "in the center" if scene.position == "center" else f"at the {scene.position}"
    article = COUNTS[scene.count] if scene.count > 1 else "one"
    return f"{article} {scene.size} {scene.colour} {noun} {where} on a black background"


def render(scene: Scene) -> np.ndarray:
    """The scene as uint8 RGB [64, 64, 3], exactly (no anti-aliasing)."""
    image = Image.new("RGB", (CANVAS, CANVAS), (0, 0, 0))
    draw = ImageDraw.Draw(image)
    side = SIZES[scene.size]
    for left, top in _object_boxes(scene, side):
        _draw_shape(draw, scene.shape, left, top, side, COLOURS[scene.colour])
    return np.asarray(image)


def sample_scenes(count: int, seed: int, held_out: bool = False) -> list[Scene]:
    """``count`` scenes from a seeded generator: from the training combinations, or (``held_out``) from the
    held-out ones."""
    rng = random.Random(seed)
    scenes: list[Scene] = []
    while len(scenes) < count:
        scene = Scene(
            colour=rng.choice(list(COLOURS)),
            shape=rng.choice(SHAPES),
            size=rng.choice(list(SIZES)),
            count=rng.choice(list(COUNTS)),
            position=rng.choice(list(POSITIONS)),
            layout_seed=rng.randrange(2**31),
        )
        if scene.held_out == held_out:
            scenes.append(scene)
    return scenes


def _object_boxes(scene: Scene, side: int) -> list[tuple[int, int]]:
    """Objects in distinct 16x16 cells of the region, then the group moved so its centre is within 3 pixels of the
    region's centre: "at the top left" always means nearest the top-left centre, never the middle."""
    rng = random.Random(scene.layout_seed)
    region_x, region_y = POSITIONS[scene.position]
    cells = rng.sample([(0, 0), (16, 0), (0, 16), (16, 16)], scene.count)
    slack = 16 - side - GAP
    boxes = [(cx + rng.randint(0, slack), cy + rng.randint(0, slack)) for cx, cy in cells]
    centre_x = sum(x for x, _ in boxes) / len(boxes) + side / 2
    centre_y = sum(y for _, y in boxes) / len(boxes) + side / 2
    shift_x = _keep_inside(round(region_x + 16 + rng.randint(-3, 3) - centre_x), [x for x, _ in boxes], side)
    shift_y = _keep_inside(round(region_y + 16 + rng.randint(-3, 3) - centre_y), [y for _, y in boxes], side)
    return [(x + shift_x, y + shift_y) for x, y in boxes]


def _keep_inside(shift: int, corners: list[int], side: int) -> int:
    """The shift, limited so the whole group stays on the canvas (moved as one, objects never touch)."""
    return min(max(shift, -min(corners)), CANVAS - side - max(corners))


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, left: int, top: int, side: int, colour) -> None:
    right, bottom = left + side - 1, top + side - 1
    middle = left + (side - 1) / 2
    if shape == "square":
        draw.rectangle((left, top, right, bottom), fill=colour)
    elif shape == "circle":
        draw.ellipse((left, top, right, bottom), fill=colour)
    elif shape == "triangle":  # apex up
        draw.polygon([(middle, top), (right, bottom), (left, bottom)], fill=colour)
    elif shape == "diamond":
        centre_y = top + (side - 1) / 2
        draw.polygon([(middle, top), (right, centre_y), (middle, bottom), (left, centre_y)], fill=colour)
    else:
        raise ValueError(f"unknown shape {shape!r}")
