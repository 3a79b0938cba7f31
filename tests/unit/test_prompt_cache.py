"""The prompt-embedding cache: LRU by bytes, counters, and sharing between guided and unguided requests."""

from __future__ import annotations

import pytest
import torch

from baton.models.runner import PromptEmbeddings, PromptInput
from baton.optim.prompt_cache import PromptCache


class CountingEncoder:
    """Encodes a prompt into a [1, 4] float32 tensor (16 bytes), twice that with its negative."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def __call__(self, inputs: list[PromptInput]) -> list[PromptEmbeddings]:
        self.batches.append([item.prompt for item in inputs])
        results = []
        for item in inputs:
            tensors = {"prompt": torch.full((1, 4), float(len(item.prompt)))}
            if item.needs_negative:
                tensors["negative"] = torch.zeros(1, 4)
            results.append(PromptEmbeddings(tensors))
        return results


def guided(prompt: str) -> PromptInput:
    return PromptInput(prompt, None, True)


def test_hits_skip_the_encoder_and_misses_are_encoded_together():
    cache, encoder = PromptCache(max_bytes=1024), CountingEncoder()
    cache.encode([guided("a"), guided("bb")], encoder)
    result = cache.encode([guided("a"), guided("ccc"), guided("bb"), guided("dddd")], encoder)
    assert encoder.batches == [["a", "bb"], ["ccc", "dddd"]]  # only the misses, in one batch
    assert [float(r.tensors["prompt"][0, 0]) for r in result] == [1.0, 3.0, 2.0, 4.0]  # in request order
    assert cache.stats() == {"entries": 4, "bytes": 4 * 32, "max_bytes": 1024, "hits": 2, "misses": 4,
                            "evictions": 0, "hit_rate": round(2 / 6, 4)}


def test_least_recently_used_entries_are_evicted_by_bytes():
    cache, encoder = PromptCache(max_bytes=3 * 32), CountingEncoder()  # room for three guided prompts
    cache.encode([guided("a"), guided("b"), guided("c")], encoder)
    cache.encode([guided("a")], encoder)  # "a" is now the most recently used
    cache.encode([guided("d")], encoder)  # evicts "b"
    assert cache.evictions == 1 and len(cache) == 3 and cache.bytes == 3 * 32
    encoder.batches.clear()
    cache.encode([guided("a"), guided("b"), guided("c")], encoder)
    assert encoder.batches == [["b"]]


def test_a_guided_entry_serves_an_unguided_request_without_its_negative():
    cache, encoder = PromptCache(max_bytes=1024), CountingEncoder()
    cache.encode([guided("a")], encoder)
    [unguided] = cache.encode([PromptInput("a", None, False)], encoder)
    assert encoder.batches == [["a"]] and set(unguided.tensors) == {"prompt"}
    # the negative prompt is part of the key
    cache.encode([PromptInput("a", "blurry", True)], encoder)
    assert encoder.batches == [["a"], ["a"]]


def test_an_entry_larger_than_the_cache_is_not_kept():
    cache, encoder = PromptCache(max_bytes=16), CountingEncoder()
    cache.encode([guided("a")], encoder)  # 32 bytes
    assert len(cache) == 0 and cache.bytes == 0


def test_the_size_must_be_positive():
    with pytest.raises(ValueError, match="`max_bytes` must be > 0"):
        PromptCache(0)
