"""Example plugin: mark responses as having passed through the sidecar.

RFC 9110 (section 7.6.3) asks intermediaries to add a ``Via`` header. This plugin is also the
smallest complete example of the plugin pattern: declare a setting, read it at start-up into
state kept on the app, and use it on each request.
"""

from __future__ import annotations

from aiohttp import web

from proxy import __version__, hookimpl
from proxy.app import SETTINGS
from proxy.context import RequestContext, UpstreamResponse
from proxy.settings import Setting

VIA_VALUE = web.AppKey("via_value", str)


@hookimpl
def sidecar_settings() -> list[Setting]:
    """The pseudonym this sidecar uses in ``Via`` (RFC 9110 allows a name instead of a host)."""
    return [Setting("via.pseudonym", "str", "mistral-sidecar",
                    "Name this sidecar gives itself in the Via response header.")]


@hookimpl
def startup(app: web.Application) -> None:
    """Compute the header value once."""
    app[VIA_VALUE] = f"1.1 {app[SETTINGS]['via.pseudonym']} ({__version__})"


@hookimpl
def on_response(ctx: RequestContext, response: UpstreamResponse) -> None:
    """Append this hop to upstream's own ``Via`` list instead of replacing it."""
    ours = ctx.app[VIA_VALUE]
    existing = response.headers.get("Via")
    ctx.response_headers["Via"] = f"{existing}, {ours}" if existing else ours
