"""A test plugin that logs during every request through a logger of no sidecar module, as a
library the sidecar uses would: a message with arguments (text beyond ASCII and a lone
surrogate among them), an extra field no JSON encoder knows, and an exception.

Enable with ``SIDECAR_PLUGINS_CHAIN="...,tests.observability.obs_thirdparty"``.
"""

from __future__ import annotations

import logging

from proxy import hookimpl
from proxy.context import RequestContext

PLUGIN = "tests.observability.obs_thirdparty"
LOGGER = "somelib.client"
#: What the line's ``message`` says.
MESSAGE = "retrying réponse \ud800 after 5 ms"

log = logging.getLogger(LOGGER)


class Peer:
    """A value of the library's own type."""

    def __str__(self) -> str:
        return "peer 10.0.0.7"


@hookimpl
def on_request(ctx: RequestContext) -> None:
    """Log a warning with an exception, as a library's retry loop does."""
    try:
        raise ConnectionResetError("connection reset by peer")
    except ConnectionResetError:
        log.warning("retrying %s after %d ms", "réponse \ud800", 5, exc_info=True,
                    extra={"peer": Peer()})
