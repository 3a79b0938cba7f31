"""Bearer-token auth: the keys (from a file or the environment) and the check every protected route runs."""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from fastapi import Request

from baton.server.errors import ApiError

API_KEYS_ENV = "BATON_API_KEYS"
"""Comma-separated API keys, read when no key file is given."""


def load_api_keys(path: Path | None) -> tuple[str, ...]:
    """Keys from a file (one per line, ``#`` comments) or, without one, from ``$BATON_API_KEYS``.

    Raises ``ValueError`` (one line, naming the file) for a file that is missing, unreadable or holds no keys:
    an empty file must not quietly mean "no auth"."""
    if path is not None:
        try:
            lines = path.read_text().splitlines()
        except FileNotFoundError:
            raise ValueError(f"`--api-key-file` {str(path)!r} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ValueError(f"`--api-key-file` {str(path)!r} cannot be read: {reason}") from None
        keys = tuple(line.strip() for line in lines if line.strip() and not line.strip().startswith("#"))
        if not keys:
            raise ValueError(f"`--api-key-file` {str(path)!r} holds no keys")
        return keys
    return tuple(key.strip() for key in os.environ.get(API_KEYS_ENV, "").split(",") if key.strip())


def require_api_key(request: Request) -> None:
    """Bearer-token auth, compared in constant time against every configured key."""
    keys = request.app.state.baton.config.api_keys
    if not keys:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    # headers arrive as latin-1 text: back to their bytes, to compare with the keys' UTF-8 bytes
    given = token.strip().encode("latin-1", "replace") if scheme.lower() == "bearer" else b""
    given_digest = hashlib.sha256(given).digest()
    matched = False
    for key in keys:  # digests of equal length, no early exit: the time taken tells neither the key nor its length
        matched |= hmac.compare_digest(given_digest, hashlib.sha256(key.encode("utf-8")).digest())
    if not matched:
        raise ApiError(401, "missing or invalid API key: send `Authorization: Bearer <key>`",
                       type_="authentication_error", code="invalid_api_key",
                       headers={"WWW-Authenticate": 'Bearer realm="baton"'})
