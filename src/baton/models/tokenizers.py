"""Tokenizers made in memory, so built-in models need no files and no network.

A byte-level CLIP vocabulary: the 256 byte characters, their end-of-word forms and the two special tokens, with no
merges. Every string tokenizes (one token per byte), and ids stay below the real CLIP vocabulary size, so the
embedding tables keep the real shapes.
"""

from __future__ import annotations

from functools import lru_cache

from transformers import CLIPTokenizer

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
