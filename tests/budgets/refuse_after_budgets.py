"""A test plugin placed after ``budgets`` in the chain: it refuses a request that carries
``X-Test-Refuse`` after budgets admitted it (and reserved its cost), as any later plugin may."""

from __future__ import annotations

from proxy import hookimpl
from proxy.context import RequestContext
from proxy.errors import SidecarError

HEADER = "X-Test-Refuse"


@hookimpl
def on_request(ctx: RequestContext) -> None:
    """Refuse the requests marked with :data:`HEADER`."""
    if ctx.request.headers.get(HEADER):
        raise SidecarError(403, "Refused by a later plugin.", type="permission_error",
                           code="refused_by_test")
