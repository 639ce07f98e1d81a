"""Shipped configuration and docs agree with the code."""

from __future__ import annotations

import re

from proxy.cli import all_declared_settings, settings_yaml
from proxy.loader import load
from proxy.settings import DEFAULT_CHAIN
from tests.conftest import REPO


def test_default_yaml_is_generated_from_the_settings_model() -> None:
    shipped = (REPO / "config" / "default.yaml").read_text()
    assert shipped == settings_yaml(all_declared_settings()), (
        "config/default.yaml is stale: mistral-sidecar settings --format yaml > "
        "config/default.yaml")


def test_default_yaml_loads_as_a_config_file() -> None:
    settings, chain = load(REPO / "config" / "default.yaml", {"MISTRAL_API_KEY": "k"})
    assert chain.names == list(DEFAULT_CHAIN)
    assert settings["server.port"] == 8080


def test_readme_lists_the_default_chain_in_order() -> None:
    readme = (REPO / "README.md").read_text()
    table = readme.split("<!-- plugins:start -->")[1].split("<!-- plugins:end -->")[0]
    assert tuple(re.findall(r"^\| `(\w+)` \|", table, re.M)) == DEFAULT_CHAIN
