"""The sidecar API key format: generating keys, hashing them and reading them back.

A key looks like ``sk-sidecar-<key_id>-<secret>``. The 16-hex-digit ``key_id`` is public (it
appears in ``keys list`` and in logs) and finds the key's row; the secret is 32 random bytes,
of which only a SHA-256 digest (bound to the key id) is stored. Because the secret has 256 bits
of entropy, a plain fast hash is enough: there is nothing to brute-force.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

PREFIX = "sk-sidecar-"
_KEY_RE = re.compile(r"^sk-sidecar-([0-9a-f]{16})-([A-Za-z0-9_-]{32,128})$")
_HASH_SCHEME = "sha256"


@dataclass(frozen=True, slots=True)
class PresentedKey:
    """A caller's key split into its public id and its secret part."""

    key_id: str
    secret: str


def new_key_id() -> str:
    """A fresh random key id (16 lowercase hex digits)."""
    return secrets.token_hex(8)


def new_secret() -> str:
    """A fresh random secret (43 URL-safe characters, 256 bits)."""
    return secrets.token_urlsafe(32)


def format_key(key_id: str, secret: str) -> str:
    """The full key as the caller presents it."""
    return f"{PREFIX}{key_id}-{secret}"


def parse_key(token: str) -> PresentedKey | None:
    """Split a presented key; ``None`` if it does not have the sidecar key shape."""
    match = _KEY_RE.match(token)
    if match is None:
        return None
    return PresentedKey(match.group(1), match.group(2))


def hash_secret(key_id: str, secret: str) -> str:
    """The stored form of a secret: ``sha256:<hex digest of key_id:secret>``."""
    digest = hashlib.sha256(f"{key_id}:{secret}".encode()).hexdigest()
    return f"{_HASH_SCHEME}:{digest}"


def secret_matches(key_id: str, secret: str, stored_hash: str) -> bool:
    """Whether ``secret`` is the key's secret, compared in constant time."""
    return hmac.compare_digest(hash_secret(key_id, secret), stored_hash)


def fingerprint(upstream_key: str) -> str:
    """A stable, non-reversible identity for a caller's own Mistral key (passthrough mode).

    ``fp-`` and the first 24 hex digits (96 bits) of SHA-256 over a fixed domain prefix: short
    enough to read in logs, long enough never to collide between real keys.
    """
    digest = hashlib.sha256(b"mistral-sidecar-fingerprint:" + upstream_key.encode()).hexdigest()
    return f"fp-{digest[:24]}"
