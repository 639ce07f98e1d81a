"""A plugin names the plugins it needs before it (``requires``); a chain without them, or with
them later, stops start-up with one line that says so."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from proxy.chain import CHAIN_SETTING
from proxy.loader import load
from proxy.settings import ConfigError
from tests.conftest import REPO
from tests.core.declared_event_plugins import PLUGIN

NEEDS = (CHAIN_SETTING + ": {plugin} needs the {needed} plugin before it ({why})")


def _check_config(chain: str) -> subprocess.CompletedProcess[str]:
    """``mistral-sidecar check-config`` with plugin chain ``chain``."""
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("SIDECAR_", "MISTRAL_", "DB_", "REDIS_", "RATE_LIMIT_"))}
    return subprocess.run([sys.executable, "-m", "proxy.cli", "check-config"],
                          env={**clean, "SIDECAR_PLUGINS_CHAIN": chain}, capture_output=True,
                          text=True, cwd=REPO, timeout=60)


@pytest.mark.parametrize(("chain", "why"), [
    ("persistence", "it is not in the chain"),
    ("persistence,store", "it comes after"),
])
def test_persistence_needs_the_store_before_it(chain: str, why: str) -> None:
    result = _check_config(chain)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "mistral-sidecar: configuration error: "
        + NEEDS.format(plugin="persistence", needed="store", why=why)]


@pytest.mark.parametrize(("chain", "why"), [
    ("auth", "it is not in the chain"),
    ("auth,store", "it comes after"),
])
def test_auth_needs_the_store_before_it(chain: str, why: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(None, {"MISTRAL_API_KEY": "k", "SIDECAR_PLUGINS_CHAIN": chain})
    assert caught.value.problems == [NEEDS.format(plugin="auth", needed="store", why=why)]


def test_a_third_party_plugin_names_what_it_needs() -> None:
    env = {"MISTRAL_API_KEY": "k"}
    audit, needs = f"{PLUGIN}:audit", f"{PLUGIN}:needs_audit"
    with pytest.raises(ConfigError) as caught:
        load(None, {**env, "SIDECAR_PLUGINS_CHAIN": f"via,{needs},{audit}"})
    assert caught.value.problems == [NEEDS.format(plugin=needs, needed=audit,
                                                  why="it comes after")]
    _settings, chain = load(None, {**env, "SIDECAR_PLUGINS_CHAIN": f"{audit},via,{needs}"})
    assert chain.names == [audit, "via", needs]


def test_with_what_they_need_before_them_they_load() -> None:
    _settings, chain = load(None, {"MISTRAL_API_KEY": "k",
                                   "SIDECAR_PLUGINS_CHAIN": "store,auth,persistence"})
    assert chain.names == ["store", "auth", "persistence"]
