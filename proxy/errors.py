"""Errors the sidecar itself produces, always in Mistral's JSON error shape."""

from __future__ import annotations

import json
from collections.abc import Mapping

from aiohttp import web

#: Default ``type`` and ``code`` per status, in the vocabulary Mistral's API uses.
_DEFAULTS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "invalid_request"),
    401: ("authentication_error", "unauthorized"),
    403: ("permission_error", "forbidden"),
    404: ("invalid_request_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    413: ("invalid_request_error", "request_too_large"),
    415: ("invalid_request_error", "unsupported_media_type"),
    429: ("rate_limit_error", "rate_limited"),
    500: ("internal_error", "internal_error"),
    502: ("upstream_error", "upstream_unreachable"),
    503: ("service_unavailable", "service_unavailable"),
    504: ("upstream_error", "upstream_timeout"),
}


class SidecarError(Exception):
    """An error answered by the sidecar itself (never an upstream error).

    Raise it from any request-phase hook to reject a request; the core turns it into a JSON
    response ``{"object": "error", "message": ..., "type": ..., "code": ...}`` with ``status``
    and any extra ``headers`` (``Retry-After``, ``WWW-Authenticate`` ...).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        default_type, default_code = _DEFAULTS.get(status, ("error", str(status)))
        self.status = status
        self.message = message
        self.type = type or default_type
        self.code = code or default_code
        self.headers: dict[str, str] = dict(headers or {})

    def body(self) -> dict[str, object]:
        """The JSON body, in Mistral's error shape."""
        return {"object": "error", "message": self.message, "type": self.type, "code": self.code}

    def encoded(self) -> bytes:
        """The JSON body as sent."""
        return json.dumps(self.body()).encode()

    def to_response(self, extra_headers: Mapping[str, str] | None = None,
                    body: bytes | None = None) -> web.Response:
        """Render as an aiohttp response (``body``: :meth:`encoded`, when already made)."""
        headers = dict(extra_headers or {})
        headers.update(self.headers)
        return web.Response(
            status=self.status,
            body=self.encoded() if body is None else body,
            content_type="application/json",
            headers=headers,
        )


class UpstreamError(SidecarError):
    """The upstream call failed without an HTTP answer.

    ``reason`` is ``"connect"`` (the request provably never reached upstream), ``"reset"``
    (the connection broke after the request was sent) or ``"timeout"``.
    """

    def __init__(self, reason: str, message: str) -> None:
        status = 504 if reason == "timeout" else 502
        code = {"connect": "upstream_unreachable", "reset": "upstream_reset",
                "timeout": "upstream_timeout"}.get(reason, "upstream_error")
        super().__init__(status, message, type="upstream_error", code=code)
        self.reason = reason

    @property
    def reached_upstream(self) -> bool:
        """Whether upstream may have received (and acted on) the request."""
        return self.reason != "connect"
