"""The floor for benchmarks: the least an aiohttp pass-through proxy can do.

One ClientSession, body read and streamed back, no hooks, no classification, no header
hygiene. The sidecar's cost is measured against this, not against nothing.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

SESSION = web.AppKey("session", aiohttp.ClientSession)
UPSTREAM = web.AppKey("upstream", str)
_SKIP = {"host", "content-length", "transfer-encoding", "connection"}
_SKIP_RESPONSE = {"transfer-encoding", "connection"}


async def handle(request: web.Request) -> web.StreamResponse:
    """Forward one request and stream the answer back."""
    body = await request.read()
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _SKIP}
    async with request.app[SESSION].request(
        request.method, request.app[UPSTREAM] + request.path_qs, headers=headers, data=body
    ) as upstream:
        response = web.StreamResponse(status=upstream.status)
        for name, value in upstream.headers.items():
            if name.lower() not in _SKIP_RESPONSE:
                response.headers.add(name, value)
        await response.prepare(request)
        async for chunk in upstream.content.iter_any():
            await response.write(chunk)
        return response


async def _session(app: web.Application) -> AsyncIterator[None]:
    app[SESSION] = aiohttp.ClientSession(
        auto_decompress=False, connector=aiohttp.TCPConnector(limit=256))
    yield
    await app[SESSION].close()


def main() -> None:
    """``python load_tests/minimal_proxy.py --port P --upstream URL``."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    app = web.Application()
    app[UPSTREAM] = args.upstream.rstrip("/")
    app.cleanup_ctx.append(_session)
    app.router.add_route("*", "/{tail:.*}", handle)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
