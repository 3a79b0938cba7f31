"""The "shapes" world: procedural scenes with exact captions, and a classical detector that reads a generated
image back and scores it against its prompt. The ground the embedded default model is trained and judged on."""

from baton.shapes.detector import Reading, read_scene, score
from baton.shapes.scenes import COLOURS, COUNTS, POSITIONS, SHAPES, SIZES, Scene, caption, render, sample_scenes

__all__ = [
    "COLOURS", "COUNTS", "POSITIONS", "Reading", "SHAPES", "SIZES", "Scene", "caption", "read_scene", "render",
    "sample_scenes", "score",
]
