"""Tokenizers made in memory, so built-in models need no files and no network.

A byte-level CLIP vocabulary: the 256 byte characters, their end-of-word forms and the two special tokens, with no
merges. Every string tokenizes (one token per byte), and ids stay below the real CLIP vocabulary size, so the
embedding tables keep the real shapes.

A character-level T5 vocabulary (SD3's and Flux's third text encoder): T5's three special tokens at T5's ids, then
the printable ASCII characters with and without the word-start mark. Anything else is ``<unk>``, which is enough
for random-weight models and keeps ids far below T5's 32128 rows.
"""

from __future__ import annotations

from functools import lru_cache

from transformers import CLIPTokenizer, T5Tokenizer

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"


def _byte_characters() -> list[str]:
    """The printable stand-ins byte-level BPE uses for the 256 byte values (GPT-2's table)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    codes = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    table = dict(zip(printable, codes))
    return [chr(table[byte]) for byte in range(256)]


@lru_cache(maxsize=1)
def byte_level_vocab() -> dict[str, int]:
    chars = _byte_characters()
    tokens = [*chars, *(c + "</w>" for c in chars), BOS_TOKEN, EOS_TOKEN]
    return {token: index for index, token in enumerate(tokens)}


def byte_level_clip_tokenizer(pad_token: str = EOS_TOKEN) -> CLIPTokenizer:
    """A CLIP tokenizer over :func:`byte_level_vocab`. SDXL's second encoder pads with ``!`` like the real one."""
    return CLIPTokenizer(
        vocab=dict(byte_level_vocab()),
        merges=[],
        model_max_length=77,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        pad_token=pad_token,
    )


T5_PAD_TOKEN = "<pad>"
T5_EOS_TOKEN = "</s>"
T5_UNK_TOKEN = "<unk>"
_WORD_START = "\u2581"  # sentencepiece's mark for "a word starts here"


@lru_cache(maxsize=1)
def character_t5_vocab() -> tuple[tuple[str, float], ...]:
    """Unigram pieces and log-probabilities. T5's tokenizer expects pad, eos, unk at ids 0, 1, 2. A word-start
    character scores as one piece, so ``"▁a"`` wins over ``"▁"`` + ``"a"`` and words tokenize as T5's do."""
    chars = [chr(code) for code in range(ord("!"), ord("~") + 1)]
    return (
        (T5_PAD_TOKEN, 0.0), (T5_EOS_TOKEN, 0.0), (T5_UNK_TOKEN, 0.0), (_WORD_START, -2.0),
        *((char, -1.0) for char in chars), *((_WORD_START + char, -1.0) for char in chars),
    )


def character_t5_tokenizer() -> T5Tokenizer:
    """A T5 tokenizer over :func:`character_t5_vocab`, with no sentinel (``<extra_id_*>``) tokens: text encoders
    never see them. 512 tokens at most, as the T5 v1.1 tokenizer SD3 and Flux ship."""
    return T5Tokenizer(
        vocab=list(character_t5_vocab()),
        extra_ids=0,
        model_max_length=512,
        eos_token=T5_EOS_TOKEN,
        unk_token=T5_UNK_TOKEN,
        pad_token=T5_PAD_TOKEN,
    )
