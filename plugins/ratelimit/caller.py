"""Who a request is counted against: the caller's key, else its credentials, else its address."""

from __future__ import annotations

import functools
import hashlib

from proxy.context import RequestContext


def caller_id(ctx: RequestContext) -> str:
    """A stable, bounded-length identifier for the caller of ``ctx``.

    ``key:<key_id>`` when an authentication plugin established an identity; otherwise
    ``auth:<digest>`` from the caller's ``Authorization`` header (hashed, so credentials never
    become Redis keys or log fields); otherwise ``ip:<address>`` of the peer.
    """
    if ctx.identity is not None:
        return f"key:{ctx.identity.key_id}"
    authorization = ctx.request.headers.get("Authorization")
    if authorization:
        return _fingerprint(authorization)
    return f"ip:{ctx.request.remote or 'unknown'}"


@functools.lru_cache(maxsize=4096)
def _fingerprint(authorization: str) -> str:
    digest = hashlib.sha256(authorization.encode("utf-8", "surrogateescape")).hexdigest()
    return f"auth:{digest[:32]}"
