"""A test-only plugin placed after ``persistence``: when a request completes, it notes whether
that request's record is already in the spool file (``WITNESSED`` on the app, by request id).

Completion hooks run in chain order and each awaits what the one before returned, so what it
sees is what a caller would find at the moment the answer leaves.
"""

from __future__ import annotations

from aiohttp import web

from plugins.persistence import PERSISTENCE
from plugins.persistence.spool import Spool
from proxy import hookimpl
from proxy.context import RequestContext

PLUGIN = "tests.persistence.spool_witness"
WITNESSED = web.AppKey("spool_witnessed", dict[str, bool])


@hookimpl
def startup(app: web.Application) -> None:
    """Nothing seen yet."""
    app[WITNESSED] = {}


@hookimpl
def on_end(ctx: RequestContext) -> None:
    """Is this request's record in the spool file now?"""
    folder = ctx.app[PERSISTENCE].options.spool_dir
    spooled = {record.data.get("request_id")
               for path in folder.rglob("*.jsonl") for record in Spool.iter_records(path)}
    ctx.app[WITNESSED][ctx.request_id] = ctx.request_id in spooled
