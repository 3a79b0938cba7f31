"""The shapes model's tokenizer: a small, documented word-level vocabulary that reads prompts as people type them.

What it does to a prompt, in order:

1. lower-cases it (and folds Unicode compatibility forms, so a full-width "ＲＥＤ" is "red");
2. splits on whitespace and splits punctuation off words, then drops the punctuation: "Magenta circle." reads as
   "magenta circle", "top-left" as "top left";
3. maps each word to a token. Synonyms are rewritten to their word first (:data:`ALIASES`: "big" is "large",
   "3" is "three", "centre" is "center"), so they share its token and the model never has to learn them. Any
   word outside the vocabulary is ``<unk>``: its own token, distinct from padding, from the end of text and from
   the empty caption used for guidance, which are all ``<|endoftext|>``.

The vocabulary is :data:`WORDS` (what captions and prompts are made of, 58 words) and three special tokens; the
40 aliases add no tokens. Keeping it closed and small is the point: a 2-layer text encoder trained on a CPU
learns every token well, and words it has never seen are visibly unknown instead of silently read as padding.
"""

from __future__ import annotations

from tokenizers import Regex, Tokenizer
from tokenizers.models import WordLevel
from tokenizers.normalizers import NFKC, Lowercase, Replace
from tokenizers.normalizers import Sequence as NormalizerSequence
from tokenizers.pre_tokenizers import Punctuation, Split, WhitespaceSplit
from tokenizers.pre_tokenizers import Sequence as PreTokenizerSequence
from tokenizers.processors import TemplateProcessing
from transformers import PreTrainedTokenizerFast

from baton.models.tokenizers import BOS_TOKEN, EOS_TOKEN
from baton.shapes.scenes import COLOURS, COUNTS, POSITIONS, SHAPES, SIZES

UNK_TOKEN = "<unk>"
MAX_TOKENS = 32
"""Start and end tokens included: "please draw an image of three large magenta triangles at the bottom right on a
black background, high quality" is 21."""

# the words scenes are described with: counts, sizes, colours, shapes (singular and plural), positions
_SCENE_WORDS = {*COUNTS.values(), *SIZES, *COLOURS, *SHAPES, *(shape + "s" for shape in SHAPES),
                *(word for position in POSITIONS for word in position.split())}
_GRAMMAR = {"a", "the", "at", "in", "on", "of", "with", "and", "is", "are", "there", "some", "corner", "side",
            "shape", "shapes"}
_FILLER = {"please", "draw", "me", "show", "image", "picture", "high", "quality", "black", "background",
           "canvas", "generate", "render", "make", "simple", "just"}
WORDS: tuple[str, ...] = tuple(sorted(_SCENE_WORDS | _GRAMMAR | _FILLER))
"""Every word with a token of its own."""

ALIASES: dict[str, str] = {
    # counts: numerals, and the articles and adjectives that mean one ("a" stays itself: it is also grammar)
    "1": "one", "2": "two", "3": "three", "single": "one", "an": "a",
    # sizes
    "big": "large", "huge": "large", "little": "small", "tiny": "small",
    # colours
    "pink": "magenta", "purple": "magenta", "violet": "magenta", "turquoise": "cyan", "aqua": "cyan",
    # shapes
    "circular": "circle", "round": "circle", "dot": "circle", "dots": "circles", "disc": "circle", "discs": "circles",
    "rhombus": "diamond", "rhombi": "diamonds", "triangular": "triangle", "box": "square", "boxes": "squares",
    "object": "shape", "objects": "shapes", "thing": "shape", "things": "shapes",
    # positions
    "centre": "center", "middle": "center", "centered": "center", "centred": "center", "central": "center",
    "upper": "top", "lower": "bottom",
    # filler
    "photo": "picture", "drawing": "picture",
}
"""Synonym → the word whose token it shares."""


def vocabulary() -> dict[str, int]:
    """Word → token id: the special tokens first, then :data:`WORDS`."""
    return {token: index for index, token in enumerate([BOS_TOKEN, EOS_TOKEN, UNK_TOKEN, *WORDS])}


def _alias_rewrites() -> list[Replace]:
    """One whole-word rewrite per word that has aliases. (Aliases cannot share ids inside the word-level model
    itself: the tokenizers library then reads some words as unknown.)"""
    by_word: dict[str, list[str]] = {}
    for alias, word in ALIASES.items():
        by_word.setdefault(word, []).append(alias)
    return [Replace(Regex(rf"\b(?:{'|'.join(aliases)})\b"), word) for word, aliases in sorted(by_word.items())]


def shapes_tokenizer() -> PreTrainedTokenizerFast:
    """The tokenizer, with CLIP's start and end tokens around each prompt and end tokens as padding, as the SD
    pipelines expect."""
    vocab = vocabulary()
    model = Tokenizer(WordLevel(vocab, unk_token=UNK_TOKEN))
    model.normalizer = NormalizerSequence([NFKC(), Lowercase(), *_alias_rewrites()])
    model.pre_tokenizer = PreTokenizerSequence([
        WhitespaceSplit(),
        Punctuation(behavior="removed"),
        Split(Regex(r"[^\w]"), behavior="removed"),  # symbols that are not Unicode punctuation: "+", "=", "~"
    ])
    model.post_processor = TemplateProcessing(single=f"{BOS_TOKEN} $A {EOS_TOKEN}",
                                              special_tokens=[(BOS_TOKEN, 0), (EOS_TOKEN, 1)])
    return PreTrainedTokenizerFast(tokenizer_object=model, bos_token=BOS_TOKEN, eos_token=EOS_TOKEN,
                                   unk_token=UNK_TOKEN, pad_token=EOS_TOKEN, model_max_length=MAX_TOKENS)
