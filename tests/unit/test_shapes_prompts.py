"""The shapes model's reading of typed prompts: its tokenizer, the varied training captions, and how free-form
prompts are scored."""

from __future__ import annotations

import random

import numpy as np
import pytest

from baton.shapes.captions import DROP_CHANCE, compose, varied_caption
from baton.shapes.detector import read_scene
from baton.shapes.prompts import (
    FREE_FORM_PROMPTS,
    FREE_FORM_STYLES,
    SEVERAL,
    free_form_accuracy,
    free_form_subset,
    score_named,
)
from baton.shapes.scenes import COLOURS, SHAPES, Scene, caption, render, sample_scenes
from baton.shapes.tokenizer import ALIASES, MAX_TOKENS, UNK_TOKEN, WORDS, shapes_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return shapes_tokenizer()


def words(tokenizer, text: str) -> list[str]:
    """The tokens of ``text`` between the start and end tokens."""
    return tokenizer.convert_ids_to_tokens(tokenizer(text).input_ids)[1:-1]


def test_case_and_punctuation_do_not_change_the_tokens(tokenizer):
    plain = tokenizer("magenta circle").input_ids
    for typed in ("Magenta circle.", "MAGENTA CIRCLE!", "magenta, circle", "'magenta' (circle)...",
                  "ＭＡＧＥＮＴＡ circle"):
        assert tokenizer(typed).input_ids == plain, typed
    assert words(tokenizer, "square!") == ["square"]
    assert words(tokenizer, "top-left") == ["top", "left"]


def test_unknown_words_get_their_own_token_not_padding_or_the_empty_caption(tokenizer):
    unknown = tokenizer.convert_tokens_to_ids(UNK_TOKEN)
    assert words(tokenizer, "please draw xyzzy") == ["please", "draw", UNK_TOKEN]
    assert unknown not in (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id)
    assert unknown not in tokenizer("", padding="max_length", max_length=MAX_TOKENS).input_ids
    assert words(tokenizer, "a+b") == ["a", UNK_TOKEN]


def test_numerals_articles_and_synonyms_read_as_the_words_they_mean(tokenizer):
    assert words(tokenizer, "3 big dots") == words(tokenizer, "three large circles")
    assert words(tokenizer, "1 tiny rhombus") == words(tokenizer, "one small diamond")
    assert words(tokenizer, "2 huge boxes") == ["two", "large", "squares"]
    assert words(tokenizer, "a single purple disc") == ["a", "one", "magenta", "circle"]
    assert words(tokenizer, "an upper right corner") == ["a", "top", "right", "corner"]
    assert words(tokenizer, "in the centre / middle") == ["in", "the", "center", "center"]
    assert words(tokenizer, "12 bigger") == [UNK_TOKEN, UNK_TOKEN]  # whole words only


def test_the_vocabulary_is_small_and_every_alias_names_a_word():
    vocab = shapes_tokenizer().get_vocab()
    assert len(vocab) == len(WORDS) + 3 < 100
    assert set(ALIASES.values()) <= set(WORDS) and not set(ALIASES) & set(WORDS)


def test_every_attribute_can_be_left_out_of_a_caption(tokenizer):
    scene = Scene("cyan", "triangle", "large", 3, "bottom left")
    rng = random.Random(0)
    everything = {"count", "size", "colour", "shape", "position"}
    assert set(DROP_CHANCE) == everything
    for left_out, gone in (("count", "three"), ("size", "large"), ("colour", "cyan"), ("shape", "triangle"),
                           ("position", "bottom")):
        for _ in range(20):
            kept = words(tokenizer, compose(scene, everything - {left_out}, rng))
            assert gone not in kept and not {gone + "s", "triangles"} <= set(kept), kept
            assert UNK_TOKEN in kept or all(word in WORDS for word in kept)


def test_a_caption_without_a_count_still_says_one_or_several():
    rng = random.Random(1)
    kept = {"colour", "shape"}
    assert compose(Scene("red", "square", "small", 1, "center"), kept, rng).split()[-1] in ("square", "box")
    assert compose(Scene("red", "square", "small", 2, "center"), kept, rng).split()[-1] in ("squares", "boxes")


def test_one_scene_gives_many_captions_and_the_template_among_them():
    scene = sample_scenes(1, seed=4)[0]
    rng = random.Random(2)
    captions = [varied_caption(scene, rng) for _ in range(200)]
    assert len(set(captions)) > 50
    assert caption(scene) in captions
    assert sum(c.lower().startswith(("please", "draw", "an image", "a picture", "show")) for c in captions) > 5
    assert [varied_caption(scene, random.Random(9)) for _ in range(3)] == [varied_caption(scene, random.Random(9))
                                                                          for _ in range(3)]


def test_captions_fit_the_text_encoder(tokenizer):
    rng = random.Random(3)
    lengths = [len(tokenizer(varied_caption(s, rng)).input_ids) for s in sample_scenes(2000, seed=5)]
    assert max(lengths) <= MAX_TOKENS


def test_the_free_form_set_covers_every_style_colour_and_shape(tokenizer):
    assert len(FREE_FORM_PROMPTS) >= 60 and len(FREE_FORM_STYLES) == 6
    assert {p.colour for p in FREE_FORM_PROMPTS} >= set(COLOURS)
    assert {p.shape for p in FREE_FORM_PROMPTS} >= set(SHAPES)
    assert all(p.named and len(tokenizer(p.text).input_ids) <= MAX_TOKENS for p in FREE_FORM_PROMPTS)
    assert not any(p.text == caption(Scene(p.colour or "red", p.shape or "circle", p.size or "small",
                                           p.count if isinstance(p.count, int) else 2, p.position or "center"))
                   for p in FREE_FORM_PROMPTS)  # none is a template caption


def test_a_subset_spreads_over_the_styles():
    assert [p.style for p in free_form_subset(6)] == list(FREE_FORM_STYLES)
    assert len(free_form_subset(20)) == 20 == len(set(free_form_subset(20)))
    assert free_form_subset(100) == FREE_FORM_PROMPTS


def test_only_the_named_attributes_are_scored():
    image = render(Scene("blue", "square", "large", 2, "top right"))
    reading = read_scene(image)
    blue_squares = next(p for p in FREE_FORM_PROMPTS if p.text == "a blue square")
    assert score_named(blue_squares, reading) == {"colour": True, "shape": True, "count": False}
    several = next(p for p in FREE_FORM_PROMPTS if p.count == SEVERAL and p.colour == "cyan"
                   and p.shape == "diamond")
    assert score_named(several, read_scene(render(Scene("cyan", "diamond", "small", 3, "center")))) == {
        "colour": True, "shape": True, "count": True}
    assert score_named(several, read_scene(render(Scene("cyan", "diamond", "small", 1, "center"))))["count"] is False


def test_free_form_accuracy_reports_every_style_and_overall():
    prompts = list(FREE_FORM_PROMPTS[:3]) + list(FREE_FORM_PROMPTS[11:12])
    exact = [render(Scene(p.colour, p.shape, p.size or "large", p.count if isinstance(p.count, int) else 2,
                          p.position or "center")) for p in prompts]
    shares = free_form_accuracy(prompts, np.stack(exact))
    assert set(shares) == {"overall", "short", "punctuation and case"}
    assert shares["overall"]["all named"] == 1.0 and "position" not in shares["short"]
    black = np.zeros_like(np.stack(exact))
    assert free_form_accuracy(prompts, black)["overall"]["all named"] == 0.0
