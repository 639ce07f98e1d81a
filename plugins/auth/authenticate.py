"""Turning a request's credentials into an :class:`~proxy.context.Identity`.

``keys`` mode: the caller presents a sidecar key, looked up by its id through a short-lived
cache (so a revoked key stops working everywhere within ``auth.cache_ttl_seconds``) and
checked against the stored hash in constant time. ``passthrough`` mode: the caller presents
its own Mistral key, which goes upstream; its identity is the key's fingerprint.

Failures raise :class:`AuthFailure` carrying the status (401, or 503 when the store cannot be
asked) and a reason for the ``auth.denied`` event. Messages never contain the presented key.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from plugins.auth.cache import LookupCache, StoreUnreachable
from plugins.auth.keys import fingerprint, parse_key, secret_matches
from plugins.auth.keystore import KeyRecord, KeyStore
from proxy.context import Identity


class AuthFailure(Exception):
    """Authentication failed; ``status`` is 401 or 503, ``reason`` is for logs and metrics."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


_MISSING = "Missing API key: send it as 'Authorization: Bearer <key>'."
_INVALID = "Invalid API key."
_UNAVAILABLE = ("The sidecar cannot verify this API key right now (key store unreachable); "
                "retry shortly.")


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else ``None``."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        return None
    return token


@dataclass(frozen=True, slots=True)
class PassthroughPolicy:
    """Roles and organisation given to passthrough identities."""

    default_role: str
    roles: Mapping[str, str]
    org: str

    def identity(self, upstream_key: str) -> Identity:
        """The identity of a caller presenting ``upstream_key``."""
        fp = fingerprint(upstream_key)
        return Identity(key_id=fp, owner=fp, role=self.roles.get(fp, self.default_role),
                        org=self.org or fp)


class Authenticator:
    """Checks sidecar keys against the key store, through a cache."""

    def __init__(self, keystore: KeyStore, cache: LookupCache[str, KeyRecord],
                 wall: Callable[[], float] = time.time, recheck_after: float = 0.2) -> None:
        self.keystore = keystore
        self.cache = cache
        self.wall = wall
        #: A cached key whose secret does not match is re-read from the database if the
        #: entry is at least this old (so a just-rotated key works at once, while wrong
        #: secrets cost at most a few queries per second).
        self.recheck_after = recheck_after

    async def _lookup(self, key_id: str, max_age: float | None = None) -> KeyRecord | None:
        try:
            return await self.cache.get(key_id, self.keystore.get, max_age)
        except StoreUnreachable:
            raise AuthFailure(503, "store_unavailable", _UNAVAILABLE) from None

    async def identify(self, authorization: str | None) -> Identity:
        """The identity behind a sidecar key, or :class:`AuthFailure`."""
        token = bearer_token(authorization)
        if token is None:
            raise AuthFailure(401, "missing" if not authorization else "malformed",
                              _MISSING if not authorization else _INVALID)
        presented = parse_key(token)
        if presented is None:
            raise AuthFailure(401, "malformed", _INVALID)
        record = await self._lookup(presented.key_id)
        if record is None:
            raise AuthFailure(401, "unknown_key", _INVALID)
        if not secret_matches(presented.key_id, presented.secret, record.secret_hash):
            # The cached hash may predate a rotation: re-read it unless it is brand new.
            record = await self._lookup(presented.key_id, max_age=self.recheck_after)
            if record is None:
                raise AuthFailure(401, "unknown_key", _INVALID)
            if not secret_matches(presented.key_id, presented.secret, record.secret_hash):
                if self.cache.health.down:
                    raise AuthFailure(503, "store_unavailable", _UNAVAILABLE)
                raise AuthFailure(401, "wrong_secret", _INVALID)
        status = record.status(self.wall())
        if status == "revoked":
            raise AuthFailure(401, "revoked", "This API key has been revoked.")
        if status == "expired":
            raise AuthFailure(401, "expired", "This API key has expired.")
        return Identity(key_id=record.key_id, owner=record.owner, role=record.role,
                        org=record.org, name=record.name)


def passthrough_identity(authorization: str | None, policy: PassthroughPolicy
                         ) -> tuple[Identity, str]:
    """The identity and upstream key of a passthrough caller, or :class:`AuthFailure`."""
    token = bearer_token(authorization)
    if token is None:
        raise AuthFailure(401, "missing" if not authorization else "malformed",
                          _MISSING if not authorization else _INVALID)
    return policy.identity(token), token
