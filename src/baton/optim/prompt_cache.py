"""The prompt-embedding cache: an LRU of encoded prompts per model, bounded in bytes, with hit and miss counts.

Services send the same prompts again and again (fixed style prompts, retries, the empty negative prompt), and a
text encoder pass costs 2 to 7% of an SD image. A hit skips it; a batch with misses encodes only the misses, in one
pass. Keys hold everything the embedding depends on besides the model: the prompt, the negative prompt and whether
the negative was needed (a request without guidance needs none); the cache lives on one model's runner.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from baton.models.types import PromptEmbeddings, PromptInput

CacheKey = tuple[str, str | None, bool]


@dataclass(slots=True)
class _Entry:
    embeddings: PromptEmbeddings
    nbytes: int


class PromptCache:
    """A thread-safe LRU of :class:`PromptEmbeddings`, bounded by the bytes of the tensors it holds."""

    def __init__(self, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError(f"`max_bytes` must be > 0, got {max_bytes!r}")
        self.max_bytes = max_bytes
        self._entries: OrderedDict[CacheKey, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def encode(
        self, inputs: list[PromptInput], encode: Callable[[list[PromptInput]], list[PromptEmbeddings]]
    ) -> list[PromptEmbeddings]:
        """Embeddings for ``inputs``: hits from the cache, the misses encoded together by ``encode`` and stored."""
        found = [self.get(item) for item in inputs]
        missing = [i for i, embeddings in enumerate(found) if embeddings is None]
        if missing:
            encoded = encode([inputs[i] for i in missing])
            for i, embeddings in zip(missing, encoded, strict=True):
                self.put(inputs[i], embeddings)
                found[i] = embeddings
        return found  # type: ignore[return-value]

    def get(self, item: PromptInput) -> PromptEmbeddings | None:
        keys = [_key(item)]
        if not item.needs_negative:  # an entry encoded with its negative serves a request that needs none
            keys.append((item.prompt, item.negative_prompt, True))
        with self._lock:
            key = next((key for key in keys if key in self._entries), None)
            if key is None:
                self.misses += 1
                return None
            self.hits += 1
            self._entries.move_to_end(key)
            tensors = self._entries[key].embeddings.tensors
        if not item.needs_negative:
            tensors = {name: t for name, t in tensors.items() if not name.startswith("negative")}
        return PromptEmbeddings(dict(tensors))

    def put(self, item: PromptInput, embeddings: PromptEmbeddings) -> None:
        nbytes = sum(t.numel() * t.element_size() for t in embeddings.tensors.values())
        if nbytes > self.max_bytes:
            return  # larger than the whole cache: keeping it would only evict everything else
        key = _key(item)
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.bytes -= old.nbytes
            # copies: the encoder's outputs are views of its whole batch, which a slice would keep alive
            tensors = {name: tensor.clone() for name, tensor in embeddings.tensors.items()}
            self._entries[key] = _Entry(PromptEmbeddings(tensors), nbytes)
            self.bytes += nbytes
            while self.bytes > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self.bytes -= evicted.nbytes
                self.evictions += 1

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            lookups = self.hits + self.misses
            return {
                "entries": len(self._entries),
                "bytes": self.bytes,
                "max_bytes": self.max_bytes,
                "hits": self.hits,
                "misses": self.misses,
                "evictions": self.evictions,
                "hit_rate": round(self.hits / lookups, 4) if lookups else None,
            }


def _key(item: PromptInput) -> CacheKey:
    return (item.prompt, item.negative_prompt, item.needs_negative)
