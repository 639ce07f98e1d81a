"""A test-only plugin: remembers the persistence events it observes (``on_event``) and, standing
in for an authentication plugin, takes the caller's owner from an ``X-Test-Owner`` header.

Enable it by module path after the plugins under test:
``SIDECAR_PLUGINS_CHAIN=store,persistence,tests.persistence.persistence_probe``.
"""

from __future__ import annotations

from proxy import hookimpl
from proxy.context import Identity, RequestContext
from tests.support.event_recorder import EVENTS, events, on_event, startup

__all__ = ["EVENTS", "events", "on_event", "on_request", "startup"]

@hookimpl
def on_request(ctx: RequestContext) -> None:
    """Set the caller's identity from ``X-Test-Owner``, as an auth plugin would."""
    owner = ctx.request.headers.get("X-Test-Owner")
    if owner:
        ctx.identity = Identity(key_id=f"key-{owner}", owner=owner, role="user")

