"""Free-form prompts: what people type, each tagged with the attributes it names, and how an image is scored.

The set is written by hand in six styles, none of them the training template, to measure what the template
held-out set cannot: whether the model follows a prompt worded the way a person words it. An image is right when
the detector reads every attribute the prompt names as named; what a prompt leaves out is not scored. A plural noun
without a count ("cyan triangles") names "several": two or three objects.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from baton.shapes.detector import Reading, read_scene
from baton.shapes.scenes import Scene, caption

SEVERAL = "several"
"""The count a plural noun names without a number: 2 or 3 objects."""
FREE_FORM_ATTRIBUTES = ("colour", "shape", "size", "count", "position")


@dataclass(frozen=True, slots=True)
class FreeFormPrompt:
    style: str
    text: str
    colour: str | None = None
    shape: str | None = None
    size: str | None = None
    count: int | str | None = None
    position: str | None = None

    @property
    def named(self) -> dict[str, object]:
        """The attributes the prompt names, and their values."""
        return {a: getattr(self, a) for a in FREE_FORM_ATTRIBUTES if getattr(self, a) is not None}


def template_prompt(scene: Scene) -> FreeFormPrompt:
    """The template caption of ``scene``, naming all five attributes."""
    return FreeFormPrompt("template", caption(scene), scene.colour, scene.shape, scene.size, scene.count,
                          scene.position)


def _prompts(style: str, *entries: tuple[str, dict]) -> list[FreeFormPrompt]:
    return [FreeFormPrompt(style, text, **named) for text, named in entries]


FREE_FORM_PROMPTS: tuple[FreeFormPrompt, ...] = tuple([
    *_prompts(
        "short",
        ("a blue square", dict(colour="blue", shape="square", count=1)),
        ("red circle", dict(colour="red", shape="circle", count=1)),
        ("green triangles", dict(colour="green", shape="triangle", count=SEVERAL)),
        ("an orange diamond", dict(colour="orange", shape="diamond", count=1)),
        ("yellow circles", dict(colour="yellow", shape="circle", count=SEVERAL)),
        ("white square", dict(colour="white", shape="square", count=1)),
        ("cyan diamonds", dict(colour="cyan", shape="diamond", count=SEVERAL)),
        ("magenta triangle", dict(colour="magenta", shape="triangle", count=1)),
        ("two squares", dict(shape="square", count=2)),
        ("something blue", dict(colour="blue")),
        ("three circles", dict(shape="circle", count=3)),
    ),
    *_prompts(
        "punctuation and case",
        ("Magenta circle.", dict(colour="magenta", shape="circle", count=1)),
        ("A BLUE SQUARE!", dict(colour="blue", shape="square", count=1)),
        ("Green, triangles, top-left.", dict(colour="green", shape="triangle", count=SEVERAL, position="top left")),
        ("Two yellow diamonds?", dict(colour="yellow", shape="diamond", count=2)),
        ("red square (small)", dict(colour="red", shape="square", size="small", count=1)),
        ("Orange Circles; Bottom Right", dict(colour="orange", shape="circle", count=SEVERAL,
                                              position="bottom right")),
        ("white triangle...", dict(colour="white", shape="triangle", count=1)),
        ("Cyan square - in the center", dict(colour="cyan", shape="square", count=1, position="center")),
        ("THREE magenta squares", dict(colour="magenta", shape="square", count=3)),
        ("'blue diamond'", dict(colour="blue", shape="diamond", count=1)),
        ("one large, red triangle!!", dict(colour="red", shape="triangle", size="large", count=1)),
    ),
    *_prompts(
        "filler",
        ("please draw one large red circle in the center on a black background",
         dict(colour="red", shape="circle", size="large", count=1, position="center")),
        ("please draw a green square", dict(colour="green", shape="square", count=1)),
        ("an image of two blue triangles", dict(colour="blue", shape="triangle", count=2)),
        ("a picture of a yellow circle, high quality", dict(colour="yellow", shape="circle", count=1)),
        ("high quality render of three orange squares", dict(colour="orange", shape="square", count=3)),
        ("show me a white diamond please", dict(colour="white", shape="diamond", count=1)),
        ("beautiful minimalist art: a cyan circle", dict(colour="cyan", shape="circle", count=1)),
        ("generate two magenta diamonds on a black background", dict(colour="magenta", shape="diamond", count=2)),
        ("can you draw a red square for me", dict(colour="red", shape="square", count=1)),
        ("simple drawing of green circles at the top right, 8k",
         dict(colour="green", shape="circle", count=SEVERAL, position="top right")),
        ("i would like an orange triangle", dict(colour="orange", shape="triangle", count=1)),
    ),
    *_prompts(
        "position first",
        ("at the bottom left, cyan triangles", dict(colour="cyan", shape="triangle", count=SEVERAL,
                                                    position="bottom left")),
        ("top right: a red square", dict(colour="red", shape="square", count=1, position="top right")),
        ("in the center, two yellow circles", dict(colour="yellow", shape="circle", count=2, position="center")),
        ("bottom right corner, one white diamond", dict(colour="white", shape="diamond", count=1,
                                                        position="bottom right")),
        ("in the top left corner a blue circle", dict(colour="blue", shape="circle", count=1, position="top left")),
        ("at the top right three green triangles", dict(colour="green", shape="triangle", count=3,
                                                        position="top right")),
        ("middle: magenta square", dict(colour="magenta", shape="square", count=1, position="center")),
        ("lower left, orange diamonds", dict(colour="orange", shape="diamond", count=SEVERAL,
                                             position="bottom left")),
        ("upper right corner, two cyan squares", dict(colour="cyan", shape="square", count=2,
                                                      position="top right")),
        ("at the bottom right a small red triangle", dict(colour="red", shape="triangle", size="small", count=1,
                                                          position="bottom right")),
        ("top left: large white circles", dict(colour="white", shape="circle", size="large", count=SEVERAL,
                                               position="top left")),
    ),
    *_prompts(
        "numerals and synonyms",
        ("3 big orange circles", dict(colour="orange", shape="circle", size="large", count=3)),
        ("1 tiny blue triangle", dict(colour="blue", shape="triangle", size="small", count=1)),
        ("2 huge green diamonds in the middle", dict(colour="green", shape="diamond", size="large", count=2,
                                                     position="center")),
        ("a single little yellow square", dict(colour="yellow", shape="square", size="small", count=1)),
        ("3 pink dots", dict(colour="magenta", shape="circle", count=3)),
        ("a big red rhombus in the upper left", dict(colour="red", shape="diamond", size="large", count=1,
                                                     position="top left")),
        ("two little white boxes in the lower right", dict(colour="white", shape="square", size="small",
                                                           count=2, position="bottom right")),
        ("1 purple circle in the centre", dict(colour="magenta", shape="circle", count=1, position="center")),
        ("turquoise triangles, upper right", dict(colour="cyan", shape="triangle", count=SEVERAL,
                                                  position="top right")),
        ("2 big blue dots", dict(colour="blue", shape="circle", size="large", count=2)),
        ("3 tiny orange squares at the lower left", dict(colour="orange", shape="square", size="small", count=3,
                                                         position="bottom left")),
    ),
    *_prompts(
        "sentences",
        ("there are three small white circles in the upper left corner",
         dict(colour="white", shape="circle", size="small", count=3, position="top left")),
        ("there is a green square in the middle", dict(colour="green", shape="square", count=1,
                                                       position="center")),
        ("i want two red diamonds", dict(colour="red", shape="diamond", count=2)),
        ("the picture shows a large yellow triangle at the bottom",
         dict(colour="yellow", shape="triangle", size="large", count=1)),
        ("make the shapes blue circles, three of them", dict(colour="blue", shape="circle", count=3)),
        ("draw me some magenta triangles on the right", dict(colour="magenta", shape="triangle", count=SEVERAL)),
        ("just one cyan diamond, nothing else", dict(colour="cyan", shape="diamond", count=1)),
        ("a yellow square sits in the bottom left corner", dict(colour="yellow", shape="square", count=1,
                                                                position="bottom left")),
        ("show two orange circles at the top right", dict(colour="orange", shape="circle", count=2,
                                                          position="top right")),
        ("a white triangle is in the center of the image", dict(colour="white", shape="triangle", count=1,
                                                               position="center")),
        ("could you make three large green squares", dict(colour="green", shape="square", size="large", count=3)),
    ),
])
FREE_FORM_STYLES: tuple[str, ...] = tuple(dict.fromkeys(p.style for p in FREE_FORM_PROMPTS))


def free_form_subset(count: int) -> tuple[FreeFormPrompt, ...]:
    """``count`` free-form prompts spread evenly over the set (the set is in style order, so 6 gives one per
    style), for quick checks; all of them when ``count`` is at least the set's size."""
    total = len(FREE_FORM_PROMPTS)
    if count >= total:
        return FREE_FORM_PROMPTS
    return tuple(FREE_FORM_PROMPTS[i * total // count] for i in range(count))


def score_named(prompt: FreeFormPrompt, reading: Reading) -> dict[str, bool]:
    """For each attribute the prompt names, whether the reading shows it."""
    checks = {}
    for attribute, wanted in prompt.named.items():
        if attribute == "count":
            checks["count"] = reading.count in (2, 3) if wanted == SEVERAL else reading.count == wanted
        else:
            checks[attribute] = getattr(reading, attribute) == wanted
    return checks


def free_form_accuracy(prompts: list[FreeFormPrompt], images) -> dict[str, dict[str, float]]:
    """Per style and ``overall``: the share of images with every named attribute right (``all named``), and per
    attribute the share right among the images whose prompt names it."""
    checks = [score_named(prompt, read_scene(image)) for prompt, image in zip(prompts, images)]
    groups = {"overall": list(range(len(prompts)))}
    for index, prompt in enumerate(prompts):
        groups.setdefault(prompt.style, []).append(index)
    shares = {}
    for group, members in groups.items():
        share = {"all named": float(np.mean([all(checks[i].values()) for i in members]))}
        for attribute in FREE_FORM_ATTRIBUTES:
            named = [checks[i][attribute] for i in members if attribute in checks[i]]
            if named:
                share[attribute] = float(np.mean(named))
        shares[group] = share
    return shares
