"""``make demo`` / ``baton demo``: a grid of shapes prompts drawn by the staged engine, in one PNG.

Half the prompts are template captions, half are worded as people type them. Every prompt is submitted at once, so
the stages overlap and the denoiser batches them, as a server would. Each cell is captioned with its prompt and
with what the detector read back from the image (the attributes the prompt names), so the grid shows at a glance
what the model gets right.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from baton.engine import Engine
from baton.request import GenerationResult
from baton.shapes.detector import read_scene
from baton.shapes.prompts import SEVERAL, FreeFormPrompt, score_named, template_prompt
from baton.shapes.scenes import Scene

DEMO_PROMPTS: tuple[FreeFormPrompt, ...] = (
    template_prompt(Scene("red", "circle", "large", 1, "center")),
    FreeFormPrompt("short", "a blue square", colour="blue", shape="square", count=1),
    template_prompt(Scene("green", "square", "small", 2, "top left")),
    FreeFormPrompt("punctuation and case", "Magenta circle.", colour="magenta", shape="circle", count=1),
    template_prompt(Scene("yellow", "diamond", "small", 3, "top right")),
    FreeFormPrompt("position first", "at the bottom left, cyan triangles", colour="cyan", shape="triangle",
                   count=SEVERAL, position="bottom left"),
    template_prompt(Scene("orange", "diamond", "large", 2, "bottom right")),
    FreeFormPrompt("filler", "please draw 3 tiny white dots in the upper right corner", colour="white",
                   shape="circle", size="small", count=3, position="top right"),
)
CELL_SCALE = 4  # 64x64 images drawn at 256x256, nearest neighbour, so the pixels stay visible
FONT_SIZE = 12
LINE_HEIGHT = 15
LABEL_HEIGHT = 3 * LINE_HEIGHT + 4  # up to two lines of prompt, one of verdict


@dataclass(slots=True)
class DemoResult:
    path: Path
    results: list[GenerationResult]
    checks: list[dict[str, bool]]
    """Per prompt, each attribute it names and whether the detector read it in the image."""
    wall_s: float


def run_demo(engine: Engine, out_dir: Path, steps: int | None = None, seed: int = 0) -> DemoResult:
    """Draw :data:`DEMO_PROMPTS` through ``engine`` (submitted together), save the grid, return what happened."""
    fields = {} if steps is None else {"steps": steps}
    started = time.perf_counter()
    futures = [engine.submit(prompt=prompt.text, seed=seed + i, **fields) for i, prompt in enumerate(DEMO_PROMPTS)]
    results = [future.result() for future in futures]
    wall_s = time.perf_counter() - started
    checks = [score_named(prompt, read_scene(result.images[0])) for prompt, result in zip(DEMO_PROMPTS, results)]
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "shapes-grid.png"
    grid(results, checks).save(path)
    return DemoResult(path, results, checks, wall_s)


def grid(results: list[GenerationResult], checks: list[dict[str, bool]], columns: int = 4) -> Image.Image:
    """The images in a grid, each over its prompt and the attributes the detector found wrong."""
    first = results[0].images[0]
    cell_w, cell_h = first.width * CELL_SCALE, first.height * CELL_SCALE
    rows = -(-len(results) // columns)
    canvas = Image.new("RGB", (columns * cell_w, rows * (cell_h + LABEL_HEIGHT)), (24, 24, 24))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=FONT_SIZE)
    for index, (prompt, result, check) in enumerate(zip(DEMO_PROMPTS, results, checks)):
        left, top = (index % columns) * cell_w, (index // columns) * (cell_h + LABEL_HEIGHT)
        canvas.paste(result.images[0].resize((cell_w, cell_h), Image.Resampling.NEAREST), (left, top))
        text = prompt.text.removesuffix(" on a black background")
        draw_words(draw, (left + 4, top + cell_h + 3), text, font, cell_w - 8, (230, 230, 230), max_lines=2)
        wrong = [attribute for attribute, ok in check.items() if not ok]
        verdict = "detector: all right" if not wrong else "detector: wrong " + ", ".join(wrong)
        draw_words(draw, (left + 4, top + cell_h + 3 + 2 * LINE_HEIGHT), verdict, font, cell_w - 8,
                   (120, 220, 120) if not wrong else (240, 150, 90), max_lines=1)
    return canvas


def draw_words(draw: ImageDraw.ImageDraw, origin: tuple[int, int], text: str, font, width: int, fill,
               max_lines: int) -> int:
    """Draw ``text`` word by word, wrapped at ``width``, and return the lines used. Each word is placed at its
    own x with a gap of a third of the font size: Pillow's small built-in font draws a space 2 pixels wide, which
    kerning closes ("twosmall green squaresat")."""
    gap = max(draw.textlength(" ", font=font), FONT_SIZE / 3)
    x, y, line = origin[0], origin[1], 1
    for word in text.split():
        length = draw.textlength(word, font=font)
        if x > origin[0] and x + length > origin[0] + width:
            if line == max_lines:
                draw.text((x, y), "…", fill=fill, font=font)
                return line
            x, y, line = origin[0], y + LINE_HEIGHT, line + 1
        draw.text((x, y), word, fill=fill, font=font)
        x += length + gap
    return line
