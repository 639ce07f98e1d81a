"""Turning environment, YAML file and plugin declarations into settings and a plugin chain."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from proxy.chain import PluginChain, installed_plugins
from proxy.settings import ConfigError, Settings, core_settings, load_yaml, resolve

CONFIG_ENV = "SIDECAR_CONFIG"


def config_path(explicit: str | None, environ: Mapping[str, str] | None = None) -> Path | None:
    """The YAML file to read: ``--config``, else ``$SIDECAR_CONFIG``, else none."""
    env = os.environ if environ is None else environ
    chosen = explicit or env.get(CONFIG_ENV) or None
    return Path(chosen) if chosen else None


def _dormant_settings(chain: PluginChain) -> set[str]:
    """Names of settings declared by installed plugins that are not in the chain."""
    names: set[str] = set()
    for name in installed_plugins():
        if name in chain.names:
            continue
        try:
            other = PluginChain([name])
        except ConfigError:
            continue
        for _plugin, extra in other.call_all("sidecar_settings"):
            names.update(setting.name for setting in extra or ())
    return names


def load(
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[Settings, PluginChain]:
    """Resolve all settings and load the plugin chain they name.

    Two passes: the core settings first (they name the plugins), then everything the enabled
    plugins declare. Raises :class:`ConfigError` with one line per problem.
    """
    tree = load_yaml(config_file) if config_file is not None else {}
    core = core_settings()
    first = resolve(core, environ=environ, config_file=config_file, yaml_data=tree,
                    strict=False)
    chain = PluginChain(list(first["plugins.chain"]))
    declared = list(core)
    for _name, extra in chain.call_all("sidecar_settings"):
        declared.extend(extra or ())
    settings = resolve(declared, environ=environ, config_file=config_file, yaml_data=tree,
                       dormant=_dormant_settings(chain) if tree else ())
    problems: list[str] = []
    for _name, found in chain.call_all("validate_settings", settings=settings):
        problems.extend(found or ())
    if problems:
        raise ConfigError(problems)
    return settings, chain
