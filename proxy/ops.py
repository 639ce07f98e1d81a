"""Who may read the operational details: ``/metrics`` and the checks of ``/readyz``.

``/healthz`` and the status of ``/readyz`` (its code and ``{"status": ...}``) are always open:
orchestrators probe them without credentials. The details (backends, auth mode, key counts,
breaker state ...) and ``/metrics`` follow two settings:

- ``ops.port`` (above 0): they are served only on requests that arrived on that port; the main
  port answers ``/metrics`` with 404 and ``/readyz`` with its bare status. The ops port serves
  no API route, so it never becomes a second way to the upstream key.
- ``ops.token``: they need ``Authorization: Bearer <token>`` (compared in constant time);
  without it ``/readyz`` answers its bare status and ``/metrics`` a Mistral-shaped 401.

Both set: both apply. Neither set: open, which suits a sidecar reachable only from its pod.
Details shown are always stripped of every configured secret.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from proxy.errors import SidecarError
from proxy.settings import Settings

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

REDACTED = "[redacted]"
# The password of ``scheme://user:password@host`` in any reported string.
_URL_PASSWORD = re.compile(r"(://[^/@\s:]*:)[^/@\s]+@")


@dataclass(frozen=True)
class OpsAccess:
    """The ``ops.*`` settings, and the checks they imply for one request."""

    token_digest: bytes | None
    port: int
    secrets: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> OpsAccess:
        """The access rules configured by ``settings``."""
        token = str(settings.get("ops.token") or "")
        return cls(
            token_digest=_digest(token) if token else None,
            port=int(settings.get("ops.port") or 0),
            secrets=secret_values(settings),
        )

    def on_ops_port(self, request: web.Request) -> bool:
        """Whether ``request`` arrived where details are served (anywhere without a port)."""
        return self.port <= 0 or local_port(request) == self.port

    def has_token(self, request: web.Request) -> bool:
        """Whether ``request`` carries the ops token (always, when none is configured)."""
        if self.token_digest is None:
            return True
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        # Digests of equal length: the comparison reveals neither the token nor its length.
        return hmac.compare_digest(_digest(credentials.strip()), self.token_digest)

    def shows_details(self, request: web.Request) -> bool:
        """Whether ``request`` may see ``/metrics`` and the checks of ``/readyz``."""
        return self.on_ops_port(request) and self.has_token(request)

    def metrics_refusal(self, request: web.Request) -> SidecarError | None:
        """Why ``/metrics`` is refused to ``request``, or ``None`` when it is served."""
        if not self.on_ops_port(request):
            return SidecarError(404, f"No route for {request.method} {request.path}.")
        if not self.has_token(request):
            return SidecarError(401, "The operational endpoints need the ops token.",
                                headers={"WWW-Authenticate": "Bearer"})
        return None

    def main_port_only(self, handler: Handler) -> Handler:
        """``handler`` answering 404 on the ops port (API routes), as is when there is none."""
        if self.port <= 0:
            return handler

        async def guarded(request: web.Request) -> web.StreamResponse:
            if local_port(request) == self.port:
                return SidecarError(
                    404, f"No route for {request.method} {request.path}.").to_response()
            return await handler(request)

        return guarded

    def redact(self, value: Any) -> Any:
        """``value`` (a readiness report) with every configured secret and URL password
        replaced by ``[redacted]``, in keys and strings at any depth."""
        if isinstance(value, str):
            for secret in self.secrets:
                if secret in value:
                    value = value.replace(secret, REDACTED)
            return _URL_PASSWORD.sub(r"\1" + REDACTED + "@", value)
        if isinstance(value, dict):
            return {self.redact(k) if isinstance(k, str) else k: self.redact(v)
                    for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.redact(v) for v in value]
        return value


def local_port(request: web.Request) -> int | None:
    """The local port the request's connection arrived on (``None`` when not TCP)."""
    transport = request.transport
    sockname = transport.get_extra_info("sockname") if transport is not None else None
    if isinstance(sockname, tuple) and len(sockname) >= 2 and isinstance(sockname[1], int):
        return sockname[1]
    return None


def secret_values(settings: Settings) -> tuple[str, ...]:
    """The values of every setting declared secret (each item of a list), longest first so
    that a secret containing another is replaced whole."""
    found: set[str] = set()
    for name, setting in settings.declared.items():
        if not setting.secret:
            continue
        value = settings.get(name)
        items = value if isinstance(value, list | tuple) else [value]
        found.update(str(item) for item in items if item not in (None, ""))
    return tuple(sorted(found, key=len, reverse=True))


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
