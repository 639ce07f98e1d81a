"""Turning environment, YAML file and plugin declarations into settings and a plugin chain."""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from proxy.chain import PluginChain, installed_plugins
from proxy.settings import (
    ConfigError,
    Setting,
    Settings,
    core_settings,
    load_yaml,
    resolve_all,
)

CONFIG_ENV = "SIDECAR_CONFIG"
#: ``SIDECAR_*`` variables that are read outside the settings model.
_OTHER_VARIABLES = frozenset({CONFIG_ENV})


def config_path(explicit: str | None, environ: Mapping[str, str] | None = None) -> Path | None:
    """The YAML file to read: ``--config``, else ``$SIDECAR_CONFIG``, else none."""
    env = os.environ if environ is None else environ
    chosen = explicit or env.get(CONFIG_ENV) or None
    return Path(chosen) if chosen else None


def _dormant_settings(chain: PluginChain) -> list[Setting]:
    """Settings declared by installed plugins that are not in the chain."""
    found: list[Setting] = []
    for name in installed_plugins():
        if name in chain.names:
            continue
        try:
            other = PluginChain([name])
        except ConfigError:
            continue
        for _plugin, extra in other.call_all("sidecar_settings"):
            found.extend(extra or ())
    return found


def unknown_variables(environ: Mapping[str, str], declared: Iterable[Setting]) -> list[str]:
    """One problem line per ``SIDECAR_*`` variable no setting reads (a misspelling, most
    likely), with the closest current name (a deprecated name is read, but never suggested)."""
    current = {name: name for name in _OTHER_VARIABLES}
    for setting in declared:
        for variable in setting.variables():
            current[variable] = setting.env or variable
    problems = []
    for variable in sorted(environ):
        if variable.startswith("SIDECAR_") and variable not in current:
            close = difflib.get_close_matches(variable, sorted(current), n=1)
            hint = f" (did you mean {current[close[0]]}?)" if close else ""
            problems.append(f"environment variable {variable}: unknown setting{hint}")
    return problems


def load(
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    serving: bool = True,
) -> tuple[Settings, PluginChain]:
    """Resolve all settings and load the plugin chain they name.

    Two passes: the core settings first (they name the plugins), then everything the enabled
    plugins declare. Raises :class:`ConfigError` with one line for every problem found, in
    the core's settings, the plugins', their combinations and the environment's names alike.
    ``serving`` false loads them for a command that never serves requests: what only
    serving needs is not required.
    """
    env = os.environ if environ is None else environ
    tree = load_yaml(config_file) if config_file is not None else {}
    core = core_settings()
    first, core_problems = resolve_all(core, environ=env, config_file=config_file,
                                       yaml_data=tree, strict=False)
    try:
        chain = PluginChain(list(first["plugins.chain"]))
    except ConfigError as error:
        raise ConfigError(core_problems + error.problems) from None
    declared = list(core)
    for _name, extra in chain.call_all("sidecar_settings"):
        declared.extend(extra or ())
    unknown = unknown_variables(env, declared)
    # Plugins outside the chain are imported only when something may be theirs.
    dormant = _dormant_settings(chain) if unknown or tree else []
    settings, problems = resolve_all(declared, environ=env, config_file=config_file,
                                     yaml_data=tree, dormant={s.name for s in dormant})
    if unknown:
        problems.extend(unknown_variables(env, [*declared, *dormant]))
    settings.serving = serving
    problems.extend(validation_problems(settings, chain))
    if problems:
        raise ConfigError(problems)
    return settings, chain


def validation_problems(settings: Settings, chain: PluginChain) -> list[str]:
    """What the core and the plugins' ``validate_settings`` find wrong with ``settings``,
    plugins missing what they require earlier in the chain first."""
    problems = chain.requirement_problems()
    if settings.serving and settings["environment"] == "production" \
            and str(settings["upstream.base_url"]).startswith("http://") \
            and not settings["upstream.allow_plain_http"]:
        problems.append("MISTRAL_BASE_URL: a plain http:// upstream is refused when "
                        "ENVIRONMENT=production (the upstream key would travel in clear) "
                        "unless SIDECAR_UPSTREAM_ALLOW_PLAIN_HTTP=true")
    for _name, found in chain.call_all("validate_settings", settings=settings):
        problems.extend(found or ())
    return problems
