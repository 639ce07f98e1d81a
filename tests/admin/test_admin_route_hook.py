"""The ``register_routes`` hook: a plugin's routes are served next to the API, and a plugin
that would take an API route over stops start-up instead."""

from __future__ import annotations

import pytest

from proxy.app import create_app
from proxy.loader import load
from proxy.settings import ConfigError
from tests.auth.auth_support import call
from tests.conftest import SidecarFactory

PLUGIN = "tests.admin.route_hook_plugin"


async def test_a_plugin_serves_its_routes(start_sidecar: SidecarFactory) -> None:
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN=PLUGIN)
    hello = await call(sidecar.url, "GET", "/acme/hello")
    assert (hello.status, hello.body) == (200, {"hello": "from a plugin"})
    missing = await call(sidecar.url, "GET", "/acme/bye")
    assert missing.status == 404 and missing.body["object"] == "error"


def test_a_plugin_cannot_take_an_api_route(base_env: dict[str, str]) -> None:
    settings, chain = load(None, {**base_env, "SIDECAR_PLUGINS_CHAIN": f"{PLUGIN}:SHADOWING"})
    with pytest.raises(ConfigError) as refused:
        create_app(settings, chain)
    assert refused.value.problems == [
        "plugins.chain (SIDECAR_PLUGINS_CHAIN): plugin 'tests.admin.route_hook_plugin:SHADOWING' "
        "registers the route /v1/models, which is the sidecar's own"]
