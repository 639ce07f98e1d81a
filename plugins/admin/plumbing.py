"""What every admin handler needs: the caller, strict JSON bodies and query strings, pages,
JSON answers, and the database behind a deadline.

Everything a caller sends is checked strictly: an unknown field or query parameter, a value
of the wrong type, a parameter given twice, answer 400 in Mistral's error shape rather than
being ignored, so that a typo never silently widens what a request does.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from aiohttp import web

from plugins.admin.access import Roles
from plugins.auth.cache import OUTAGES
from plugins.store import DATABASE
from plugins.store.db import Database
from plugins.store.deadline import within
from proxy.context import Identity
from proxy.errors import SidecarError

T = TypeVar("T")

#: Largest JSON body an admin request may send.
MAX_BODY_BYTES = 64 * 1024
DEFAULT_PAGE = 100
MAX_PAGE = 1000
#: What a resource id in a path may look like (Mistral's ids are letters, digits, ``_`` and
#: ``-``); anything else, a decoded ``/`` or ``..`` included, is a 404.
_RESOURCE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}")
_KEY_ID = re.compile(r"[0-9a-f]{16}")
_JSON_TYPES = ("application/json",)


@dataclass(frozen=True, slots=True)
class AdminConfig:
    """The admin plugin's own settings and the facts it reads once at start-up, and the
    changes still running for callers that hung up."""

    query_timeout: float
    unowned_org: str
    roles: Roles
    detached: set[asyncio.Task[Any]] = field(default_factory=set)


async def to_the_end(app: web.Application, change: Awaitable[T]) -> T:
    """Await ``change`` (a key created, revoked, rotated, a record adopted) so that it runs
    to its end, audit line included, even if the caller hangs up and its handler is
    cancelled: what the database took is then also in the audit log. Shutdown waits for
    such changes (:func:`finish_detached`)."""
    task = asyncio.ensure_future(change)
    detached = app[ADMIN].detached
    detached.add(task)
    task.add_done_callback(detached.discard)
    return await asyncio.shield(task)


async def finish_detached(app: web.Application) -> None:
    """Wait for the changes whose callers hung up."""
    config = app.get(ADMIN)
    if config is not None and config.detached:
        await asyncio.gather(*config.detached, return_exceptions=True)


ADMIN = web.AppKey("admin_config", AdminConfig)


@dataclass(frozen=True, slots=True)
class AdminRequest:
    """One authenticated admin request."""

    request: web.Request
    caller: Identity

    @property
    def app(self) -> web.Application:
        """The sidecar application."""
        return self.request.app

    @property
    def config(self) -> AdminConfig:
        """The admin plugin's configuration."""
        return self.app[ADMIN]

    @property
    def db(self) -> Database:
        """The store plugin's database."""
        return self.app[DATABASE]

    def path_param(self, name: str) -> str:
        """A path parameter (decoded by aiohttp)."""
        return self.request.match_info[name]

    async def run(self, work: Awaitable[T]) -> T:
        """``work`` (database queries), or 503 when the database is unreachable or slower
        than ``admin.query_timeout_seconds``."""
        try:
            return await within(work, self.config.query_timeout)
        except OUTAGES:
            raise unavailable() from None


def unavailable() -> SidecarError:
    """The 503 of a database that cannot answer."""
    return SidecarError(503, "The sidecar's database cannot answer right now; retry shortly.",
                        code="store_unavailable", headers={"Retry-After": "1"})


def bad_request(message: str, code: str = "invalid_request") -> SidecarError:
    """A 400 in Mistral's shape."""
    return SidecarError(400, message, code=code)


def not_found(what: str) -> SidecarError:
    """The 404 for something absent or in another organisation (the two look alike)."""
    return SidecarError(404, f"{what} not found.")


def key_id_or_404(text: str) -> str:
    """A key id from a path, or 404 when it cannot be one."""
    if not _KEY_ID.fullmatch(text):
        raise not_found("Key")
    return text


def resource_id_or_404(text: str, what: str) -> str:
    """An agent or conversation id from a path, or 404 when it cannot be one."""
    if not _RESOURCE_ID.fullmatch(text) or ".." in text:
        raise not_found(what)
    return text


# --- answers ---------------------------------------------------------------------------------


def answer(body: Any, status: int = 200) -> web.Response:
    """A JSON answer that no cache keeps (some carry a key's secret)."""
    return web.json_response(body, status=status, headers={"Cache-Control": "no-store"},
                             dumps=lambda value: json.dumps(value, ensure_ascii=False))


def page(items: list[dict[str, Any]], limit: int, cursor: str = "id") -> dict[str, Any]:
    """A list answer from up to ``limit + 1`` items: ``has_more`` says whether there was
    one more, ``next_after`` is the ``after`` that asks for the next page."""
    more = len(items) > limit
    items = items[:limit]
    return {"object": "list", "data": items, "has_more": more,
            "next_after": items[-1][cursor] if more and items else None}


def iso_seconds(epoch: float | None) -> str | None:
    """Epoch seconds as ``2025-01-31T12:00:00Z`` (``None`` stays ``None``)."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- what the caller sent --------------------------------------------------------------------


def query(request: web.Request, allowed: tuple[str, ...]) -> dict[str, str]:
    """The query parameters, each at most once and all among ``allowed``, else 400."""
    found: dict[str, str] = {}
    for name, value in request.query.items():
        if name not in allowed:
            raise bad_request(f"Unknown query parameter {name!r} (known: "
                              f"{', '.join(allowed) or 'none'}).", "unknown_parameter")
        if name in found:
            raise bad_request(f"Query parameter {name!r} is given more than once.")
        found[name] = value
    return found


def page_params(params: Mapping[str, str]) -> tuple[int, str | None]:
    """``limit`` (1 to 1000, default 100) and ``after`` of a list request."""
    text = params.get("limit")
    limit = DEFAULT_PAGE
    if text is not None:
        if not text.isdigit() or not 1 <= int(text) <= MAX_PAGE:
            raise bad_request(f"limit: expected a whole number from 1 to {MAX_PAGE}.")
        limit = int(text)
    after = params.get("after")
    if after is not None and not after:
        raise bad_request("after: must not be empty.")
    return limit, after


async def json_body(request: web.Request, required: Mapping[str, type],
                    optional: Mapping[str, type]) -> dict[str, Any]:
    """The request's JSON object, with the ``required`` fields and only those and the
    ``optional`` ones, each of its type (an optional field may also be ``null``, which is
    dropped). A request with no body counts as ``{}``."""
    raw = await _read(request)
    if not raw.strip():
        data: Any = {}
    else:
        # No Content-Type is taken as JSON; any other than JSON is refused.
        if "Content-Type" in request.headers and request.content_type not in _JSON_TYPES:
            raise SidecarError(415, "Send the body as application/json.")
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise bad_request("The request body is not valid JSON.", "invalid_json") from None
    if not isinstance(data, dict):
        raise bad_request("The request body must be a JSON object.", "invalid_json")
    unknown = sorted(set(data) - set(required) - set(optional))
    if unknown:
        raise bad_request(f"Unknown field(s): {', '.join(unknown)} (known: "
                          f"{', '.join([*required, *optional]) or 'none'}).", "unknown_field")
    for name in required:
        if data.get(name) is None:
            raise bad_request(f"{name}: required.", "missing_field")
    out: dict[str, Any] = {}
    for name, value in data.items():
        if value is None:
            continue
        kind = required.get(name) or optional[name]
        # bool is an int in Python; JSON true is no number.
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise bad_request(f"{name}: expected {_JSON_NAMES.get(kind, kind.__name__)}.")
        out[name] = value
    return out


_JSON_NAMES = {str: "a string", int: "a whole number", bool: "true or false"}


async def _read(request: web.Request) -> bytes:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise _too_large()
    parts: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.readany()
        if not chunk:
            return b"".join(parts)
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _too_large()
        parts.append(chunk)


def _too_large() -> SidecarError:
    return SidecarError(413, f"The request body exceeds {MAX_BODY_BYTES} bytes.")
