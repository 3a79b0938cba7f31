"""``make demo`` / ``baton demo``: a grid of shapes prompts drawn by the staged engine, in one PNG.

Every prompt is submitted at once, so the stages overlap and the denoiser batches them, as a server would. Each
cell is captioned with its prompt and with what the detector read back from the image, so the grid shows at a
glance what the model gets right.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from baton.engine import Engine
from baton.request import GenerationResult
from baton.shapes.detector import read_scene, score
from baton.shapes.scenes import Scene, caption

DEMO_SCENES: tuple[Scene, ...] = (
    Scene("red", "circle", "large", 1, "center"),
    Scene("green", "square", "small", 2, "top left"),
    Scene("blue", "triangle", "large", 1, "bottom right"),
    Scene("yellow", "diamond", "small", 3, "top right"),
    Scene("cyan", "circle", "small", 2, "bottom left"),
    Scene("magenta", "square", "large", 1, "top left"),
    Scene("white", "triangle", "small", 3, "center"),
    Scene("orange", "diamond", "large", 2, "bottom right"),
)
CELL_SCALE = 4  # 64x64 images drawn at 256x256, nearest neighbour, so the pixels stay visible
LABEL_HEIGHT = 34


@dataclass(slots=True)
class DemoResult:
    path: Path
    results: list[GenerationResult]
    checks: list[dict[str, bool]]
    wall_s: float


def run_demo(engine: Engine, out_dir: Path, steps: int | None = None, seed: int = 0) -> DemoResult:
    """Draw :data:`DEMO_SCENES` through ``engine`` (submitted together), save the grid, return what happened."""
    fields = {} if steps is None else {"steps": steps}
    started = time.perf_counter()
    futures = [engine.submit(prompt=caption(scene), seed=seed + i, **fields) for i, scene in enumerate(DEMO_SCENES)]
    results = [future.result() for future in futures]
    wall_s = time.perf_counter() - started
    checks = [score(scene, read_scene(result.images[0])) for scene, result in zip(DEMO_SCENES, results)]
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "shapes-grid.png"
    grid(results, checks).save(path)
    return DemoResult(path, results, checks, wall_s)


def grid(results: list[GenerationResult], checks: list[dict[str, bool]], columns: int = 4) -> Image.Image:
    """The images in a grid, each over two lines: its prompt, and the attributes the detector found wrong."""
    first = results[0].images[0]
    cell_w, cell_h = first.width * CELL_SCALE, first.height * CELL_SCALE
    rows = -(-len(results) // columns)
    canvas = Image.new("RGB", (columns * cell_w, rows * (cell_h + LABEL_HEIGHT)), (24, 24, 24))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for index, (scene, result, check) in enumerate(zip(DEMO_SCENES, results, checks)):
        left, top = (index % columns) * cell_w, (index // columns) * (cell_h + LABEL_HEIGHT)
        canvas.paste(result.images[0].resize((cell_w, cell_h), Image.Resampling.NEAREST), (left, top))
        words = caption(scene).removesuffix(" on a black background")
        wrong = [attribute for attribute, ok in check.items() if not ok]
        verdict = "detector: all right" if not wrong else "detector: wrong " + ", ".join(wrong)
        draw.text((left + 4, top + cell_h + 3), words, fill=(230, 230, 230), font=font)
        draw.text((left + 4, top + cell_h + 18), verdict, fill=(120, 220, 120) if not wrong else (240, 150, 90),
                  font=font)
    return canvas
