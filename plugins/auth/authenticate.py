"""Turning a request's credentials into an :class:`~proxy.context.Identity`.

``keys`` mode: the caller presents a sidecar key, looked up by its id in the key table held
in memory (:mod:`plugins.auth.keytable`, refreshed in the background so a revoked key stops
working everywhere within ``auth.cache_ttl_seconds``) and checked against the stored hash in
constant time. ``passthrough`` mode: the caller presents
its own Mistral key, which goes upstream; its identity is the key's fingerprint.

Failures raise :class:`AuthFailure` carrying the status (401, or 503 when the store cannot be
asked) and a reason for the ``auth.denied`` event. Messages never contain the presented key.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from plugins.auth.cache import StoreUnreachable
from plugins.auth.keys import fingerprint, parse_key, secret_matches
from plugins.auth.keytable import KeyTable
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
    """Checks sidecar keys against the key table."""

    def __init__(self, keys: KeyTable, wall: Callable[[], float] = time.time) -> None:
        self.keys = keys
        self.wall = wall

    async def identify(self, authorization: str | None) -> Identity:
        """The identity behind a sidecar key, or :class:`AuthFailure`."""
        token = bearer_token(authorization)
        if token is None:
            raise AuthFailure(401, "missing" if not authorization else "malformed",
                              _MISSING if not authorization else _INVALID)
        presented = parse_key(token)
        if presented is None:
            raise AuthFailure(401, "malformed", _INVALID)
        try:
            record = await self.keys.lookup(presented.key_id)
            if record is None:
                raise AuthFailure(401, "unknown_key", _INVALID)
            if not secret_matches(presented.key_id, presented.secret, record.secret_hash):
                # The hash in memory may predate a rotation: re-read that key.
                record = await self.keys.recheck(presented.key_id)
                if record is None:
                    raise AuthFailure(401, "unknown_key", _INVALID)
                if not secret_matches(presented.key_id, presented.secret, record.secret_hash):
                    raise AuthFailure(401, "wrong_secret", _INVALID)
        except StoreUnreachable:
            raise AuthFailure(503, "store_unavailable", _UNAVAILABLE) from None
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
