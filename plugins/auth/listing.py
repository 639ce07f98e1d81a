"""List endpoints that show only what the caller may see, with pagination that stays correct.

Design: the sidecar *pages through upstream until the caller's page is full*. For the caller's
page ``p`` of size ``n`` it walks upstream's list from the start in pages of
``auth.list_scan_page_size`` items, keeps the items the caller may see and returns visible
items ``p*n .. p*n+n-1``. Cursor lists (``/v1/agents/pages``) hand out their own
``next_page_token`` that records where in upstream's list the next page begins.

Why not serve pages from the ownership table? Upstream owns the items and their order, and
applies every filter the caller sent (``metadata``, ``name``, ``search``, ``sources``,
``purpose`` ...); building the page from our table would need one upstream request per item
to fetch its content and would have to reimplement those filters. Filtering only the one
upstream page the caller asked for would be cheap but wrong: pages would come back short and
items would slide between pages. Paging through upstream keeps upstream's order, filters and
item shapes exactly; the price is extra upstream requests for deep pages, bounded by
``auth.list_scan_max_items`` (beyond it the sidecar answers 400 rather than a wrong page).

The upstream calls go through the ``call`` given to ``wrap_upstream``, so retries, circuit
breaking and key pooling apply to each page.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

from plugins.auth.ownership import AGENT, BATCH_JOB, CONVERSATION, FILE
from proxy.context import RequestContext, UpstreamCall, UpstreamResponse
from proxy.errors import SidecarError


@dataclass(frozen=True, slots=True)
class ListSpec:
    """How one list operation pages and shapes its answer."""

    kind: str
    #: ``array`` (bare JSON list, page/page_size), ``total`` ({data, total}, page/page_size) or
    #: ``cursor`` ({data, next_page_token}, page_token/page_size).
    shape: str
    default_page_size: int


LISTS: dict[str, ListSpec] = {
    "conversations.list": ListSpec(CONVERSATION, "array", 100),
    "agents.list": ListSpec(AGENT, "array", 20),
    "agents.list_pages": ListSpec(AGENT, "cursor", 20),
    "files.list": ListSpec(FILE, "total", 100),
    "batch.jobs.list": ListSpec(BATCH_JOB, "total", 100),
}

#: ``visible(kind, items) -> the visible items, in order``.
VisibilityFilter = Callable[[str, list[Any]], Awaitable[list[Any]]]

_TOKEN_PREFIX = "sct_"
_PAGING = ("page", "page_size", "page_token")


@dataclass(slots=True)
class ListPlan:
    """One caller's list request, and (once computed) the page to answer with."""

    spec: ListSpec
    path: str
    query: list[tuple[str, str]]
    page: int
    page_size: int
    token: tuple[str | None, int] | None
    result: Any = None
    done: bool = False
    scanned: int = field(default=0)


def _int_param(value: str | None, default: int, minimum: int) -> int:
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise SidecarError(400, "page and page_size must be integers.") from None
    if number < minimum:
        raise SidecarError(400, f"page must be at least 0 and page_size at least 1, "
                                f"got {number}.")
    return number


def encode_token(upstream_token: str | None, skip: int) -> str:
    """The sidecar's page token: where the next page starts in upstream's list."""
    raw = json.dumps([upstream_token, skip], separators=(",", ":")).encode()
    return _TOKEN_PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str) -> tuple[str | None, int]:
    """Read back :func:`encode_token`; 400 for anything else."""
    invalid = SidecarError(400, "Invalid page_token.")
    if not token.startswith(_TOKEN_PREFIX):
        raise invalid
    data = token[len(_TOKEN_PREFIX):]
    try:
        upstream, skip = json.loads(base64.urlsafe_b64decode(data + "=" * (-len(data) % 4)))
    except (ValueError, TypeError, binascii.Error):
        raise invalid from None
    if not (upstream is None or isinstance(upstream, str)) or not isinstance(skip, int) \
            or skip < 0:
        raise invalid
    return upstream, skip


def plan_for(ctx: RequestContext, spec: ListSpec) -> ListPlan:
    """Read the caller's paging parameters; the rest of the query goes upstream unchanged."""
    pairs = parse_qsl(ctx.query_string, keep_blank_values=True)
    given = dict(pairs)
    page_size = _int_param(given.get("page_size"), spec.default_page_size, 1)
    token = None
    page = 0
    if spec.shape == "cursor":
        raw = given.get("page_token")
        token = decode_token(raw) if raw else (None, 0)
    else:
        page = _int_param(given.get("page"), 0, 0)
    rest = [(k, v) for k, v in pairs if k not in _PAGING]
    return ListPlan(spec, ctx.path, rest, page, page_size, token)


def _items(spec: ListSpec, body: Any) -> list[Any] | None:
    if spec.shape == "array":
        return body if isinstance(body, list) else None
    if isinstance(body, dict) and isinstance(body.get("data"), list):
        return list(body["data"])
    return None


class _Scanner:
    """Fetches upstream pages for one plan through ``call``."""

    def __init__(self, ctx: RequestContext, call: UpstreamCall, plan: ListPlan,
                 visible: VisibilityFilter, page_size: int, max_items: int) -> None:
        self.ctx = ctx
        self.call = call
        self.plan = plan
        self.visible = visible
        self.page_size = page_size
        self.max_items = max_items
        self.original_query = ctx.query_string
        self.last: UpstreamResponse | None = None

    async def fetch(self, paging: list[tuple[str, str]]) -> tuple[UpstreamResponse, Any]:
        """One upstream page: the response and its parsed body (``None`` if not usable)."""
        if self.last is not None:
            await self.last.release()
        self.ctx.query_string = urlencode([*self.plan.query, *paging])
        response = await self.call(self.ctx)
        self.last = response
        if response.status >= 300:
            return response, None
        if response.status != 200:
            raise SidecarError(502, f"Upstream answered a list with status {response.status}.",
                               type="upstream_error", code="upstream_bad_list")
        encoding = response.headers.get("Content-Encoding", "identity").lower()
        content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if encoding != "identity" or not content_type.endswith("json"):
            # The core relays only uncompressed JSON through rewrite_response; anything else
            # would reach the caller unfiltered.
            raise SidecarError(502, "Upstream answered a list the sidecar cannot filter.",
                               type="upstream_error", code="upstream_bad_list")
        try:
            body = json.loads(await response.read())
        except (ValueError, UnicodeDecodeError):
            body = None
        items = _items(self.plan.spec, body)
        if items is None:
            raise SidecarError(502, "Upstream answered a list in an unexpected shape.",
                               type="upstream_error", code="upstream_bad_list")
        self.plan.scanned += len(items)
        return response, body

    def too_deep(self) -> SidecarError:
        """The error for a page beyond the scan limit."""
        return SidecarError(
            400, f"This page lies beyond the first {self.max_items} upstream items the sidecar "
            "scans to filter lists by owner; narrow the listing with filters.",
            code="list_scan_limit")

    async def offset_pages(self) -> UpstreamResponse:
        """Fill an offset page (``array`` and ``total`` shapes)."""
        plan = self.plan
        start = plan.page * plan.page_size
        end = start + plan.page_size
        seen = 0
        out: list[Any] = []
        upstream_page = 0
        body: Any = None
        while True:
            response, body = await self.fetch(
                [("page", str(upstream_page)), ("page_size", str(self.page_size))])
            if body is None:
                return response
            items = _items(plan.spec, body) or []
            for item in await self.visible(plan.spec.kind, items):
                if start <= seen < end:
                    out.append(item)
                seen += 1
            if len(items) < self.page_size:
                break
            if plan.spec.shape != "total" and seen >= end:
                break
            if plan.scanned >= self.max_items:
                raise self.too_deep()
            upstream_page += 1
        if plan.spec.shape == "array":
            plan.result = out
        else:
            plan.result = {**body, "data": out, "total": seen}
        plan.done = True
        return response

    async def cursor_pages(self) -> UpstreamResponse:
        """Fill a cursor page (``/v1/agents/pages``)."""
        plan = self.plan
        assert plan.token is not None
        upstream_token, skip = plan.token
        out: list[Any] = []
        next_token: str | None = None
        while True:
            paging = [("page_size", str(self.page_size))]
            if upstream_token:
                paging.append(("page_token", upstream_token))
            response, body = await self.fetch(paging)
            if body is None:
                return response
            items = _items(plan.spec, body) or []
            raw_next = body.get("next_page_token")
            upstream_next = raw_next if isinstance(raw_next, str) and raw_next else None
            shown = {id(item) for item in await self.visible(plan.spec.kind, items)}
            full_at = None
            for index in range(skip, len(items)):
                if id(items[index]) in shown:
                    out.append(items[index])
                    if len(out) == plan.page_size:
                        full_at = index
                        break
            if full_at is not None:
                more_here = any(id(items[i]) in shown for i in range(full_at + 1, len(items)))
                if more_here:
                    next_token = encode_token(upstream_token, full_at + 1)
                elif upstream_next:
                    next_token = encode_token(upstream_next, 0)
                break
            if upstream_next is None:
                break
            if plan.scanned >= self.max_items:
                # A cursor page may be short: hand back what we have and where to go on.
                next_token = encode_token(upstream_next, 0)
                break
            upstream_token, skip = upstream_next, 0
        plan.result = {**body, "data": out, "next_page_token": next_token}
        plan.done = True
        return response

    async def run(self) -> UpstreamResponse:
        """Scan, then put the caller's own request back on the context."""
        try:
            if self.plan.spec.shape == "cursor":
                return await self.cursor_pages()
            return await self.offset_pages()
        except BaseException:
            if self.last is not None:
                await self.last.release()
            raise
        finally:
            self.ctx.query_string = self.original_query


def wrap_list(ctx: RequestContext, call: UpstreamCall, plan: ListPlan,
              visible: VisibilityFilter, page_size: int, max_items: int) -> UpstreamCall:
    """An upstream call that pages through upstream and leaves the filtered page in ``plan``."""

    async def scanning(ctx: RequestContext) -> UpstreamResponse:
        method = ctx.method
        if method == "HEAD":
            # A HEAD is answered as the GET it is classified as, filtered alike (the core
            # sends its headers without the body): upstream's own HEAD would describe the
            # unfiltered list.
            ctx.method = "GET"
        try:
            return await _Scanner(ctx, call, plan, visible, page_size, max_items).run()
        finally:
            ctx.method = method

    return scanning
