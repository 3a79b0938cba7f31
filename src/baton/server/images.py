"""Images served by URL (``response_format="url"``): unguessable ids, kept for a bounded time and total size."""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass


@dataclass(slots=True)
class StoredImage:
    data: bytes
    media_type: str
    expires_at: float


class ImageStore:
    """Oldest images leave first when the store is over ``max_bytes``; each expires ``ttl_s`` after it was put."""

    def __init__(self, ttl_s: float, max_bytes: int) -> None:
        self.ttl_s = ttl_s
        self.max_bytes = max_bytes
        self._images: OrderedDict[str, StoredImage] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def put(self, data: bytes, media_type: str, extension: str) -> str:
        """Store ``data``; returns its name, ``<id>.<extension>`` (the id has 192 random bits)."""
        name = f"{secrets.token_urlsafe(24)}.{extension}"
        with self._lock:
            self._expire(time.monotonic())
            self._images[name] = StoredImage(data, media_type, time.monotonic() + self.ttl_s)
            self._bytes += len(data)
            while self._bytes > self.max_bytes and len(self._images) > 1:
                _, evicted = self._images.popitem(last=False)
                self._bytes -= len(evicted.data)
        return name

    def get(self, name: str) -> StoredImage | None:
        with self._lock:
            self._expire(time.monotonic())
            return self._images.get(name)

    def __len__(self) -> int:
        with self._lock:
            return len(self._images)

    def _expire(self, now: float) -> None:
        while self._images:
            name, oldest = next(iter(self._images.items()))
            if oldest.expires_at > now:
                return
            del self._images[name]
            self._bytes -= len(oldest.data)
