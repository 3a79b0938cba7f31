"""Training captions that vary the way typed prompts do: a fresh caption for each sample of a scene.

Trained on one template, where every attribute sits at a fixed word position, the model learned to read
attributes by position: colour was right 100% of the time as the third word and 44% elsewhere, "please" in front
of a perfect caption broke it, and leaving the count out drew two objects. So a caption here is built from the
scene each time it is drawn:

- each attribute may be left out (the image keeps what the scene has, so a prompt that leaves one out gets it from
  the scene prior: "a blue square" is one blue square of any size, anywhere);
- the position phrase comes before or after the objects, and size and colour in either order;
- counts as words, numerals or articles ("a", "an", "one", "single", "1");
- synonyms ("big", "tiny", "upper", "middle", ...), which the tokenizer maps to the words they mean;
- the noun singular for one object and plural for more, or a generic "shape(s)" / "object(s)" for the shape;
- filler before, after and inside ("please draw", "an image of", "high quality", and words the tokenizer does not
  know, so the model learns to look past ``<unk>``);
- a quarter of the time, the exact template caption (:func:`baton.shapes.scenes.caption`).
"""

from __future__ import annotations

import random

from baton.shapes.scenes import Scene, caption

TEMPLATE_SHARE = 0.25
DROP_CHANCE = {"count": 0.3, "size": 0.45, "colour": 0.12, "shape": 0.12, "position": 0.35}
"""How often each attribute is left out of a varied caption. Size and position are the ones people most often
leave out; colour and shape are what prompts are about."""

_COUNT_WORDS = {1: ("a", "a", "one", "1", "single", "a single"), 2: ("two", "2"), 3: ("three", "3")}
_SIZE_WORDS = {"small": ("small", "little", "tiny"), "large": ("large", "big", "huge")}
_SHAPE_WORDS = {"circle": ("circle", "circle", "dot", "disc"), "square": ("square", "square", "box"),
                "triangle": ("triangle",), "diamond": ("diamond", "diamond", "rhombus")}
_PLURALS = {"box": "boxes", "rhombus": "rhombi"}
_GENERIC_NOUNS = ("shape", "object", "thing")
_VERTICAL = {"top": ("top", "upper"), "bottom": ("bottom", "lower")}
_CENTRE = ("center", "centre", "middle")
_PREFIXES = ("please draw", "draw", "an image of", "a picture of", "a photo of", "please draw me", "show me",
             "generate", "render", "high quality", "a high quality image of", "make", "a simple drawing of",
             "there is", "just", "beautiful", "minimalist art:")
_SUFFIXES = ("on a black background", "on black", "on a black canvas", "high quality", "please", "thanks",
             "in high quality", "8k", "with a black background", "simple")
_UNKNOWN_WORDS = ("beautiful", "nice", "cute", "flat", "vector", "colorful", "clean", "sharp", "art", "style",
                  "lovely", "very", "really", "hd", "detailed", "mmm", "ok")


def varied_caption(scene: Scene, rng: random.Random) -> str:
    """One caption of ``scene``: the template a quarter of the time, otherwise a varied one."""
    if rng.random() < TEMPLATE_SHARE:
        return caption(scene)
    kept = {attribute for attribute, chance in DROP_CHANCE.items() if rng.random() >= chance}
    return compose(scene, kept, rng)


def compose(scene: Scene, kept: set[str], rng: random.Random) -> str:
    """A caption naming only the attributes in ``kept`` (any of count, size, colour, shape, position)."""
    adjectives = [_pick(rng, _SIZE_WORDS[scene.size])] if "size" in kept else []
    if "colour" in kept:
        adjectives.insert(rng.randrange(len(adjectives) + 1) if rng.random() < 0.2 else len(adjectives),
                          scene.colour)
    objects = " ".join([*_count_words(scene, kept, rng), *adjectives, _noun(scene, kept, rng)])
    phrases = [objects]
    if "position" in kept:
        where = _position_phrase(scene.position, rng)
        phrases.insert(0 if rng.random() < 0.3 else 1, where)
    if rng.random() < 0.35:
        phrases.insert(0, _pick(rng, _PREFIXES))
    if rng.random() < 0.35:
        phrases.append(_pick(rng, _SUFFIXES))
    words = ", ".join(phrases).split() if rng.random() < 0.3 else " ".join(phrases).split()
    if rng.random() < 0.15:
        words.insert(rng.randrange(len(words) + 1), _pick(rng, _UNKNOWN_WORDS))
    text = " ".join(_articles(words))
    return text + "." if rng.random() < 0.15 else text


def _articles(words: list[str]) -> list[str]:
    """"an" before a vowel, "a" before anything else (one token to the model, but captions read as English)."""
    return [("an" if following[:1] in ("a", "e", "i", "o", "u") else "a") if word in ("a", "an") else word
            for word, following in zip(words, [*words[1:], ""])]


def _count_words(scene: Scene, kept: set[str], rng: random.Random) -> list[str]:
    if "count" not in kept:
        return []
    return [_pick(rng, _COUNT_WORDS[scene.count])]


def _noun(scene: Scene, kept: set[str], rng: random.Random) -> str:
    """The shape's noun (or a generic one when the shape is left out), plural when there is more than one
    object; singular or plural is how a prompt without a count still says one or several."""
    noun = _pick(rng, _SHAPE_WORDS[scene.shape]) if "shape" in kept else _pick(rng, _GENERIC_NOUNS)
    if scene.count == 1:
        return noun
    return _PLURALS.get(noun, noun + "s")


def _position_phrase(position: str, rng: random.Random) -> str:
    if position == "center":
        return (_pick(rng, ("in the", "at the", "in the", "")) + " " + _pick(rng, _CENTRE)).strip()
    vertical, horizontal = position.split()
    corner = f"{_pick(rng, _VERTICAL[vertical])} {horizontal}"
    if rng.random() < 0.15:
        corner = corner.replace(" ", "-")
    if rng.random() < 0.25:
        corner += " corner"
    return (_pick(rng, ("at the", "in the", "on the", "")) + " " + corner).strip()


def _pick(rng: random.Random, options) -> str:
    return options[rng.randrange(len(options))]
