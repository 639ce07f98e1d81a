"""Cache keys: which stored answer a request may be given.

A key is a SHA-256 over the caller's scope (its organisation, plus its own upstream
credential when it brought one), the operation, the path and query, and the canonical JSON
of the request body without ``stream``: a streamed and a plain request for the same content
share one key. Nothing of the request is kept in the key in clear.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

__all__ = ["KEY_VERSION", "cache_key", "canonical_body"]

#: Changes whenever what goes into a key changes, so old entries are never read as new.
KEY_VERSION = "v1"

#: Body fields that change how an answer is delivered, not what it says.
_DELIVERY_FIELDS = frozenset({"stream"})


def canonical_body(body: dict[str, Any]) -> bytes:
    """``body`` as canonical JSON: keys sorted, no whitespace, delivery fields left out."""
    content = {name: value for name, value in body.items() if name not in _DELIVERY_FIELDS}
    # The standard library, not orjson: sort_keys must reach every nested object, and the
    # exact text only has to be stable, not fast.
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=True).encode("utf-8", "surrogatepass")


def cache_key(scope: tuple[str, ...], operation: str, path: str, query: str,
              body: dict[str, Any]) -> str:
    """The hex key of a request. ``scope`` holds who may share the answer (their
    organisation first). Each part is length-prefixed, and the number of scope parts counted,
    so no two different requests run their parts together into the same bytes."""
    digest = hashlib.sha256()
    digest.update(b"%d;" % len(scope))
    for part in (KEY_VERSION, *scope, operation, path, query):
        raw = part.encode("utf-8", "surrogatepass")
        digest.update(b"%d:" % len(raw))
        digest.update(raw)
    digest.update(canonical_body(body))
    return digest.hexdigest()
