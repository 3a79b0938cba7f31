"""Reading a scene back from an image, with classical image processing only (no model), and scoring it.

Foreground is every pixel brighter than the black background; objects are its 4-connected components above a minimum
area. Each object's colour is the palette colour nearest the mean RGB of its interior (a decoder's edges fade). Its
shape comes from how much of its bounding box it fills (square ~1.0, circle ~0.79, triangle and diamond ~0.5) and,
between the last two, from where its mass sits (a triangle's is low, a diamond's central). The scene's colour and
shape are the majority over objects, its count is the number of objects, and its position the region nearest the
objects' mean centre. On exactly rendered scenes the reading is exact (tested on thousands), so on generated images
every miss is the model's.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass

import numpy as np

from baton.shapes.scenes import CANVAS, COLOURS, POSITIONS, SIZES, Scene

FOREGROUND_THRESHOLD = 60  # max channel above this is not background
MIN_OBJECT_AREA = 12  # pixels: smaller specks are noise (a small circle covers ~50)
_PALETTE = np.array(list(COLOURS.values()), dtype=np.float32)
_PALETTE_NAMES = list(COLOURS)
_REGION_CENTRES = {name: (x + 16, y + 16) for name, (x, y) in POSITIONS.items()}
_SIZE_SPLIT = (SIZES["small"] + SIZES["large"]) / 2
ATTRIBUTES = ("colour", "shape", "count", "size", "position")


@dataclass(frozen=True, slots=True)
class DetectedObject:
    colour: str
    shape: str
    size: str
    area: int
    centre: tuple[float, float]  # (x, y)


@dataclass(frozen=True, slots=True)
class Reading:
    """What the detector saw: the scene's attributes (``None`` where it saw no object), and the objects."""

    colour: str | None
    shape: str | None
    size: str | None
    count: int
    position: str | None
    objects: tuple[DetectedObject, ...]


def read_scene(image: np.ndarray) -> Reading:
    """Read a uint8 RGB image [64, 64, 3] (other sizes are read at their own scale)."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
    scale = image.shape[1] / CANVAS
    mask = image.max(axis=2) > FOREGROUND_THRESHOLD
    objects = tuple(
        _describe(image, pixels, scale) for pixels in _components(mask) if len(pixels) >= MIN_OBJECT_AREA * scale**2
    )
    if not objects:
        return Reading(None, None, None, 0, None, ())
    centre_x = float(np.mean([o.centre[0] for o in objects])) / scale
    centre_y = float(np.mean([o.centre[1] for o in objects])) / scale
    position = min(_REGION_CENTRES, key=lambda name: (_REGION_CENTRES[name][0] - centre_x) ** 2
                   + (_REGION_CENTRES[name][1] - centre_y) ** 2)
    return Reading(
        colour=_majority(o.colour for o in objects),
        shape=_majority(o.shape for o in objects),
        size=_majority(o.size for o in objects),
        count=len(objects),
        position=position,
        objects=objects,
    )


def score(scene: Scene, reading: Reading) -> dict[str, bool]:
    """Which of the prompt's attributes the image shows."""
    return {
        "colour": reading.colour == scene.colour,
        "shape": reading.shape == scene.shape,
        "count": reading.count == scene.count,
        "size": reading.size == scene.size,
        "position": reading.position == scene.position,
    }


def accuracy(scenes: list[Scene], images) -> dict[str, float]:
    """Over a set of prompts and their images: the share showing each attribute, and all of colour, shape and count
    at once (``colour+shape+count``)."""
    checks = [score(scene, read_scene(image)) for scene, image in zip(scenes, images)]
    shares = {attribute: float(np.mean([check[attribute] for check in checks])) for attribute in checks[0]}
    shares["colour+shape+count"] = float(np.mean([c["colour"] and c["shape"] and c["count"] for c in checks]))
    return shares


def _components(mask: np.ndarray) -> list[list[tuple[int, int]]]:
    """4-connected components of ``mask`` as lists of (y, x)."""
    height, width = mask.shape
    seen = np.zeros_like(mask, dtype=bool)
    components = []
    for y, x in zip(*np.nonzero(mask)):
        if seen[y, x]:
            continue
        seen[y, x] = True
        queue, pixels = deque([(y, x)]), []
        while queue:
            cy, cx = queue.popleft()
            pixels.append((cy, cx))
            for ny, nx in ((cy - 1, cx), (cy + 1, cx), (cy, cx - 1), (cy, cx + 1)):
                if 0 <= ny < height and 0 <= nx < width and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
        components.append(pixels)
    return components


def _describe(image: np.ndarray, pixels: list[tuple[int, int]], scale: float) -> DetectedObject:
    ys = np.array([p[0] for p in pixels])
    xs = np.array([p[1] for p in pixels])
    # colour from the object's interior: a decoder's soft edges fade to black, and a faded yellow is nearer orange
    inside = _interior(pixels)
    mean_rgb = image[inside[:, 0], inside[:, 1]].astype(np.float32).mean(axis=0)
    colour = _PALETTE_NAMES[int(np.argmin(((_PALETTE - mean_rgb) ** 2).sum(axis=1)))]
    box_h, box_w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    fill = len(pixels) / float(box_h * box_w)
    if fill > 0.9:
        shape = "square"
    elif fill > 0.65:
        shape = "circle"
    else:  # triangle (apex up: most mass in the lower half) or diamond (symmetric)
        lower = float(np.mean(ys > (ys.min() + ys.max()) / 2))
        shape = "triangle" if lower > 0.6 else "diamond"
    size = "large" if max(box_h, box_w) / scale > _SIZE_SPLIT else "small"
    return DetectedObject(colour, shape, size, len(pixels), (float(xs.mean()), float(ys.mean())))


def _interior(pixels: list[tuple[int, int]]) -> np.ndarray:
    """The pixels whose four neighbours are in the object too (all of them when none are: a thin sliver)."""
    members = set(pixels)
    inside = [(y, x) for y, x in pixels
              if {(y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)} <= members]
    return np.array(inside or pixels)


def _majority(values) -> str:
    return Counter(values).most_common(1)[0][0]
