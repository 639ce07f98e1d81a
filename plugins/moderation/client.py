"""The call to Mistral's moderation endpoint, on the sidecar's own upstream session and keys.

Why not through the ``wrap_upstream`` chain: that chain wraps the caller's request. Its
wrappers read and write the caller's context (attempt count, upstream status, access-log
fields, response headers such as the retry plugin's attempt count), copy the caller's
headers, and carry policies made for that request (retries with backoff, list paging,
concurrency slots), none of which fits a side call with its own short deadline; the core's
sending function is also private. What the side call must share with the proxied request
is shared here: the application's upstream ``aiohttp`` session (its connection pool and
connect timeout), the upstream base URL, and the key the core put on the request (the
caller's own key in pass-through mode) drawn through the key pool's round-robin when the
pool manages it, with 401 and 429 answers cooling the key for everyone exactly as the key
pool plugin does.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
from yarl import URL

from plugins.keypool import COOLING_STATUSES, KEYPOOL
from proxy import jsoncodec
from proxy.backoff import parse_retry_after
from proxy.context import RequestContext

__all__ = ["ENDPOINT", "ModerationClient", "ModerationUnavailable"]

#: Raw-text classification: one result per text, so each text's result can be cached alone.
ENDPOINT = "/v1/moderations"


class ModerationUnavailable(Exception):
    """The classifier gave no usable answer. ``reason`` is one of ``timeout``,
    ``unreachable``, ``status`` (an HTTP error, in ``status``) or ``malformed``."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason if status is None else f"{reason} {status}")
        self.reason = reason
        self.status = status


class ModerationClient:
    """Classifies texts with ``model`` at ``base_url``, each call within ``timeout`` seconds;
    ``wall_clock`` reads ``Retry-After`` dates."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, model: str,
                 timeout: float, wall_clock: Callable[[], float]) -> None:
        self.session = session
        base = URL(base_url)
        self.url = base.with_path(base.path.rstrip("/") + ENDPOINT)
        self.model = model
        self.timeout = timeout
        self.wall_clock = wall_clock

    async def classify(self, ctx: RequestContext, texts: list[str]) -> list[dict[str, float]]:
        """The category scores of each of ``texts``, in order, within the timeout (every key
        tried included). Raises :class:`ModerationUnavailable`."""
        try:
            async with asyncio.timeout(self.timeout):
                return await self._classify(ctx, texts)
        except TimeoutError:
            raise ModerationUnavailable("timeout") from None

    async def _classify(self, ctx: RequestContext, texts: list[str]) -> list[dict[str, float]]:
        # Standard json: ASCII escapes keep even a lone surrogate encodable.
        payload = json.dumps({"model": self.model, "input": texts}).encode()
        key = ctx.upstream_api_key
        pool = ctx.app.get(KEYPOOL)
        if pool is None or len(pool) < 2 or not pool.manages(key):
            status, body, _headers = await self._post(ctx, key, payload)
            return _results(status, body, len(texts))
        tried: set[int] = set()
        index = pool.pick(tried)
        status = 0
        while index is not None:
            tried.add(index)
            status, body, headers = await self._post(ctx, pool.keys[index], payload)
            if status not in COOLING_STATUSES:
                return _results(status, body, len(texts))
            pool.cool(index, status, parse_retry_after(headers, self.wall_clock()))
            index = pool.pick(tried)
        raise ModerationUnavailable("status", status)

    async def _post(self, ctx: RequestContext, key: str | None, payload: bytes
                    ) -> tuple[int, bytes, Mapping[str, str]]:
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            # The upstream session does not decompress.
            "Accept-Encoding": "identity",
            "X-Request-ID": ctx.request_id,
        }
        if key:
            headers["Authorization"] = f"Bearer {key}"
        try:
            async with self.session.post(self.url, data=payload, headers=headers,
                                         allow_redirects=False) as response:
                body = await response.read()
                encoding = response.headers.get("Content-Encoding", "identity").lower()
                if encoding != "identity":
                    raise ModerationUnavailable("malformed")
                return response.status, body, response.headers
        except (aiohttp.ClientError, OSError) as exc:
            if isinstance(exc, TimeoutError):
                raise
            raise ModerationUnavailable("unreachable") from None


def _results(status: int, body: bytes, expected: int) -> list[dict[str, float]]:
    if status != 200:
        raise ModerationUnavailable("status", status)
    try:
        data: Any = jsoncodec.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ModerationUnavailable("malformed") from None
    results = data.get("results") if isinstance(data, dict) else None
    if not isinstance(results, list) or len(results) != expected:
        raise ModerationUnavailable("malformed")
    out: list[dict[str, float]] = []
    for result in results:
        scores = result.get("category_scores") if isinstance(result, dict) else None
        if not isinstance(scores, dict):
            raise ModerationUnavailable("malformed")
        out.append({str(category): float(score) for category, score in scores.items()
                    if isinstance(score, int | float) and not isinstance(score, bool)})
    return out

