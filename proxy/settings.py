"""Configuration: settings declared by the core and by plugins, read from env and YAML.

Every setting has a dotted name (``cache.ttl_seconds``) that is also its path in the YAML file,
an environment variable, a type, a default and a help text. The variable is derived from the
name (``SIDECAR_CACHE_TTL_SECONDS``) unless the setting is one the deployment guide names
(``MISTRAL_API_KEY``, ``DB_HOST``, ``RATE_LIMIT_REQUESTS`` ...); names used before that scheme
still work as deprecated aliases, with a warning. The core declares its own settings in
:func:`core_settings`; plugins add theirs through the ``sidecar_settings`` hook, so
``check-config`` and the configuration reference cover everything from one model.
Precedence: environment, then YAML file, then default.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}

logger = logging.getLogger("mistral_sidecar.config")

#: ``Setting.env`` when the variable is derived from the setting's name (the default).
DERIVED = "<derived>"

#: Deprecated variables already warned about in this process.
_warned: set[str] = set()


def derived_env(name: str) -> str:
    """The environment variable of the setting ``name``: ``cache.ttl_seconds`` is read from
    ``SIDECAR_CACHE_TTL_SECONDS``."""
    return "SIDECAR_" + name.upper().replace(".", "_")


class ConfigError(Exception):
    """Invalid configuration; ``problems`` holds one human-readable line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Setting:
    """One configuration setting.

    ``kind`` is one of ``str``, ``path`` (``~`` expanded), ``int``, ``float``, ``bool``,
    ``list`` (comma-separated in the environment, a list in YAML), ``data`` (any YAML
    structure; JSON in the environment).
    ``env`` is the environment variable: derived from the name unless given (a name from the
    deployment guide), ``None`` for a setting read from the YAML file only.
    ``deprecated_env`` are older names of the variable, still read, with a warning.
    ``secret`` settings are never printed. ``check`` validates a parsed value and returns an
    error message or ``None``.
    """

    name: str
    kind: str
    default: Any
    help: str
    env: str | None = DERIVED
    secret: bool = False
    choices: tuple[str, ...] | None = None
    minimum: float | None = None
    check: Callable[[Any], str | None] | None = field(default=None, compare=False)
    deprecated_env: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.env == DERIVED:
            object.__setattr__(self, "env", derived_env(self.name))

    def variables(self) -> tuple[str, ...]:
        """Every environment variable this setting reads: its own, then deprecated ones."""
        return (self.env, *self.deprecated_env) if self.env is not None else ()

    def describe_source(self) -> str:
        """Where this setting can be set, for messages."""
        return f"{self.name} ({self.env})" if self.env else self.name


def _parse(setting: Setting, raw: Any, from_env: bool) -> Any:
    """Convert a raw env/YAML value to the setting's kind; raises ValueError with a reason."""
    kind = setting.kind
    if kind == "str":
        if not isinstance(raw, str | int | float):
            raise ValueError("expected a string")
        return str(raw)
    if kind == "path":
        if not isinstance(raw, str):
            raise ValueError("expected a path")
        return os.path.expanduser(raw)
    if kind == "int":
        if isinstance(raw, bool):
            raise ValueError("expected an integer")
        try:
            return int(str(raw).strip())
        except ValueError:
            raise ValueError(f"expected an integer, got {raw!r}") from None
    if kind == "float":
        if isinstance(raw, bool):
            raise ValueError("expected a number")
        try:
            return float(str(raw).strip())
        except ValueError:
            raise ValueError(f"expected a number, got {raw!r}") from None
    if kind == "bool":
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError(f"expected true or false, got {raw!r}")
    if kind == "list":
        if isinstance(raw, str):
            return [item.strip() for item in raw.split(",") if item.strip()]
        if isinstance(raw, list):
            return [str(item) for item in raw]
        raise ValueError("expected a list")
    if kind == "data":
        if from_env and isinstance(raw, str):
            try:
                return json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ValueError(f"expected JSON ({exc.msg})") from None
        return raw
    raise ValueError(f"unknown setting kind {kind!r}")


def _from_environment(setting: Setting, env: Mapping[str, str]) -> tuple[str, str] | None:
    """The variable that sets ``setting`` and its raw value, or ``None`` when none does.

    The current name wins over deprecated ones, which are still read; each deprecated name
    in use is logged once per process. Raises ValueError when a current and a deprecated name
    disagree, since either choice would silently ignore what someone meant.
    """
    chosen: tuple[str, str] | None = None
    for variable in setting.variables():
        value = env.get(variable, "")
        if value == "":
            continue
        if variable != setting.env and variable not in _warned:
            _warned.add(variable)
            logger.warning("environment variable %s is deprecated: use %s", variable,
                           setting.env)
        if chosen is None:
            chosen = (variable, value)
        elif value != chosen[1]:
            raise ValueError(f"{setting.name}: environment variables {chosen[0]} and {variable} "
                             f"(deprecated) are set to different values; set only {setting.env}")
    return chosen


def _validate(setting: Setting, value: Any) -> str | None:
    if value is None:
        return None
    if setting.choices is not None and value not in setting.choices:
        return f"must be one of {', '.join(setting.choices)}, got {value!r}"
    if setting.minimum is not None and isinstance(value, int | float) and value < setting.minimum:
        return f"must be at least {setting.minimum:g}, got {value!r}"
    if setting.check is not None:
        return setting.check(value)
    return None


def _lookup(tree: Mapping[str, Any], dotted: str) -> tuple[bool, Any]:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _yaml_leaf_paths(tree: Mapping[str, Any], prefix: str = "") -> Iterable[str]:
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield path
            yield from _yaml_leaf_paths(value, path + ".")
        else:
            yield path


class Settings:
    """Resolved configuration values, looked up by dotted name."""

    def __init__(
        self,
        declared: Mapping[str, Setting],
        values: Mapping[str, Any],
        source_file: Path | None,
        raw_yaml: Mapping[str, Any],
    ) -> None:
        self.declared = dict(declared)
        self._values = dict(values)
        self.source_file = source_file
        self.raw_yaml = raw_yaml
        #: Whether these settings are for serving requests (``serve``, ``demo``) rather than
        #: for a command that never calls Mistral (``keys``, ``migrate``, ``usage`` ...).
        self.serving = True

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def get(self, name: str, default: Any = None) -> Any:
        """The value of ``name``, or ``default`` when no such setting is declared."""
        return self._values.get(name, default)

    def section(self, prefix: str) -> dict[str, Any]:
        """All values under ``prefix.``, keyed by the rest of their names."""
        start = prefix + "."
        return {k[len(start) :]: v for k, v in self._values.items() if k.startswith(start)}

    def redacted(self) -> dict[str, Any]:
        """Values safe to print: secrets shown only as set or unset."""
        out: dict[str, Any] = {}
        for name, setting in sorted(self.declared.items()):
            value = self._values.get(name)
            if setting.secret:
                out[name] = "<set>" if value else "<unset>"
            else:
                out[name] = value
        return out


def load_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML config file; raises ConfigError naming the file on any problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"config file {path}: {exc.strerror or exc}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError([f"config file {path}{where}: not valid YAML"]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([f"config file {path}: top level must be a mapping"])
    return data


def resolve(
    declared: Iterable[Setting],
    *,
    environ: Mapping[str, str] | None = None,
    config_file: Path | None = None,
    yaml_data: Mapping[str, Any] | None = None,
    strict: bool = True,
    dormant: Iterable[str] = (),
) -> Settings:
    """Resolve every declared setting from env, YAML and defaults.

    Raises :class:`ConfigError` listing every problem, one line each, naming the setting and
    the environment variable it came from. With ``strict`` false, YAML keys that no declared
    setting claims are not reported (used before plugins have declared theirs).
    """
    settings, problems = resolve_all(declared, environ=environ, config_file=config_file,
                                     yaml_data=yaml_data, strict=strict, dormant=dormant)
    if problems:
        raise ConfigError(problems)
    return settings


def resolve_all(
    declared: Iterable[Setting],
    *,
    environ: Mapping[str, str] | None = None,
    config_file: Path | None = None,
    yaml_data: Mapping[str, Any] | None = None,
    strict: bool = True,
    dormant: Iterable[str] = (),
) -> tuple[Settings, list[str]]:
    """Like :func:`resolve`, but return the problems instead of raising, with every setting
    that has one at its default, so later checks can still run and report theirs too."""
    env = os.environ if environ is None else environ
    table: dict[str, Setting] = {}
    variables: dict[str, str] = {}
    for setting in declared:
        if setting.name in table:
            raise ConfigError([f"setting {setting.name} is declared twice"])
        for variable in setting.variables():
            if variable in variables:
                raise ConfigError([f"settings {variables[variable]} and {setting.name} both "
                                   f"read {variable}"])
            variables[variable] = setting.name
        table[setting.name] = setting
    tree: Mapping[str, Any] = yaml_data if yaml_data is not None else {}
    if config_file is not None and yaml_data is None:
        tree = load_yaml(config_file)

    problems: list[str] = []
    values: dict[str, Any] = {}
    for name, setting in table.items():
        raw: Any = None
        found = False
        origin = ""
        values[name] = setting.default
        try:
            from_env = _from_environment(setting, env)
        except ValueError as exc:
            problems.append(str(exc))
            continue
        if from_env is not None:
            raw, found, origin = from_env[1], True, f"environment variable {from_env[0]}"
        else:
            found, raw = _lookup(tree, name)
            origin = f"{name} in {config_file or 'config'}"
        if not found or raw is None:
            value = setting.default
        else:
            try:
                value = _parse(setting, raw, from_env=origin.startswith("environment"))
            except ValueError as exc:
                problems.append(f"{origin}: {exc}")
                continue
        message = _validate(setting, value)
        if message:
            problems.append(f"{origin if found else name}: {message}")
            continue
        values[name] = value

    if strict:
        known = set(table) | set(dormant)
        known_prefixes = {n.rsplit(".", i)[0] for n in known for i in range(n.count(".") + 1)}
        for path in _yaml_leaf_paths(tree):
            if path not in known and path not in known_prefixes:
                if not any(path.startswith(n + ".") for n in table if table[n].kind == "data"):
                    problems.append(f"{path} in {config_file or 'config'}: unknown setting")
    return Settings(table, values, config_file, tree), problems


def _check_url(value: str) -> str | None:
    from yarl import URL

    try:
        url = URL(value)
        port = url.port
    except ValueError as exc:
        return f"must be an http:// or https:// URL, got {value!r} ({exc})"
    if url.scheme not in ("http", "https") or not url.host or port is None:
        return f"must be an http:// or https:// URL with a host, got {value!r}"
    if url.user is not None or url.password is not None or url.raw_query_string \
            or url.raw_fragment:
        return "must be scheme://host[:port][/path], without credentials, query or fragment"
    return None


def check_port(value: int) -> str | None:
    """A TCP port number (0 is allowed where the setting's minimum allows it)."""
    return None if value <= 65535 else f"must be a port number (at most 65535), got {value}"


_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def check_host(value: str) -> str | None:
    """An IP address or a DNS name; empty (meaning: none) and, for databases, an absolute
    socket directory are allowed too."""
    if value == "" or value.startswith("/"):
        return None
    try:
        ipaddress.ip_address(value.strip("[]"))
        return None
    except ValueError:
        pass
    name = value.removesuffix(".")
    if len(name) <= 253 and all(_HOST_LABEL.match(label) for label in name.split(".")):
        return None
    return f"must be an IP address or a host name, got {value!r}"


def _default_data_dir() -> str:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return str(Path(base) / "mistral-sidecar")


#: The built-in plugins in the order they run by default: observers first (so they see every
#: request, rejected ones included), then identity, then checks that may reject, then the
#: record, and around-advice last (retry outermost, key pool innermost).
DEFAULT_CHAIN = (
    "prices", "logs", "metrics", "metrics_push", "tracing", "store", "auth", "validate", "guard",
    "ratelimit", "budgets", "concurrency", "moderation", "output_guard", "persistence", "admin",
    "console", "cache", "fallback", "retry", "breaker", "keypool", "via",
)


def core_settings() -> list[Setting]:
    """The settings the core itself reads."""
    return [
        Setting("environment", "str", "development",
                "Deployment environment name; production makes serve refuse unsafe settings "
                "(plain-HTTP upstream, content logging, passthrough callers) without their "
                "opt-in.", env="ENVIRONMENT"),
        Setting("log.level", "str", "INFO", "Log level.", env="LOG_LEVEL",
                choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")),
        Setting("server.host", "str", "127.0.0.1",
                "Address to listen on (0.0.0.0 inside containers).",
                deprecated_env=("SIDECAR_HOST",), check=check_host),
        Setting("server.port", "int", 8080, "Port to listen on (0 picks a free one).",
                deprecated_env=("SIDECAR_PORT",), minimum=0, check=check_port),
        Setting("server.workers", "int", 1,
                "Worker processes sharing the port (SO_REUSEPORT); more than one needs a "
                "fixed port, and Redis for limits shared across workers.",
                deprecated_env=("SIDECAR_WORKERS",), minimum=1),
        Setting("server.gc_threshold", "int", 10_000,
                "Allocations between the garbage collector's youngest-generation passes "
                "(Python's default is 700, which makes it re-scan the objects of every "
                "request in flight many times per request; 0 keeps Python's setting).",
                deprecated_env=("SIDECAR_GC_THRESHOLD",), minimum=0),
        Setting("server.shutdown_grace_seconds", "float", 30.0,
                "On SIGTERM, how long in-flight requests and streams may take to finish.",
                deprecated_env=("SIDECAR_SHUTDOWN_GRACE_SECONDS",), minimum=0),
        Setting("server.header_timeout_seconds", "float", 10.0,
                "Longest time a caller may take to send a request's line and headers; a "
                "slower connection is closed.",
                deprecated_env=("SIDECAR_HEADER_TIMEOUT_SECONDS",), minimum=0.001),
        Setting("server.max_header_bytes", "int", 32 * 1024,
                "Largest request line plus headers, counted while they are read; a larger "
                "request gets 431 and its connection is closed.",
                deprecated_env=("SIDECAR_MAX_HEADER_BYTES",), minimum=256),
        Setting("server.max_header_count", "int", 100,
                "Most request header lines; more get 431 and the connection is closed.",
                deprecated_env=("SIDECAR_MAX_HEADER_COUNT",), minimum=1),
        Setting("ops.token", "str", "",
                "When set, /metrics and the details of /readyz answer only to "
                "'Authorization: Bearer <token>'; /healthz and the status of /readyz stay "
                "open for probes.", secret=True),
        Setting("ops.port", "int", 0,
                "When set, /metrics and the details of /readyz are served on this port "
                "(on server.host) and no longer on the main one (0: the main port).",
                minimum=0, check=check_port),
        Setting("server.data_dir", "path", _default_data_dir(),
                "Directory for the embedded database, spool files and other local state.",
                deprecated_env=("SIDECAR_DATA_DIR",)),
        Setting("upstream.base_url", "str", "https://api.mistral.ai",
                "Base URL of the Mistral API.", env="MISTRAL_BASE_URL", check=_check_url),
        Setting("upstream.allow_plain_http", "bool", False,
                "Allow an http:// MISTRAL_BASE_URL when ENVIRONMENT=production (an egress "
                "proxy on a private network, a local test upstream)."),
        Setting("upstream.api_key", "list", [],
                "Mistral API key(s) sent upstream; several comma-separated keys form a pool.",
                env="MISTRAL_API_KEY", secret=True),
        Setting("upstream.connect_timeout_seconds", "float", 5.0,
                "Timeout for connecting to upstream.",
                deprecated_env=("SIDECAR_CONNECT_TIMEOUT_SECONDS",), minimum=0.001),
        Setting("upstream.first_byte_timeout_seconds", "float", 300.0,
                "Timeout until upstream's status and headers arrive.",
                deprecated_env=("SIDECAR_FIRST_BYTE_TIMEOUT_SECONDS",), minimum=0.001),
        Setting("upstream.idle_timeout_seconds", "float", 120.0,
                "Longest silence allowed while a response body or stream is being read.",
                deprecated_env=("SIDECAR_IDLE_TIMEOUT_SECONDS",), minimum=0.001),
        Setting("upstream.total_timeout_seconds", "float", 1800.0,
                "Upper bound for a whole request including its response body.",
                deprecated_env=("SIDECAR_TOTAL_TIMEOUT_SECONDS",), minimum=0.001),
        Setting("upstream.max_connections", "int", 256,
                "Size of the upstream keep-alive connection pool.", minimum=1),
        Setting("limits.max_json_body_bytes", "int", 10 * 1024 * 1024,
                "Largest JSON request body; larger ones get 413 without being read.",
                deprecated_env=("SIDECAR_MAX_JSON_BODY_BYTES",), minimum=1),
        Setting("limits.max_upload_bytes", "int", 1024 * 1024 * 1024,
                "Largest streamed (multipart or binary) request body.",
                deprecated_env=("SIDECAR_MAX_UPLOAD_BYTES",), minimum=1),
        Setting("limits.max_capture_bytes", "int", 4 * 1024 * 1024,
                "Largest JSON response body kept in memory for completion hooks "
                "(persistence, usage); larger ones stream through unrecorded.",
                deprecated_env=("SIDECAR_MAX_CAPTURE_BYTES",), minimum=0),
        Setting("redis.host", "str", "",
                "Redis host shared by all replicas (rate limits, budgets, the response cache); "
                "empty keeps their state in this process only.",
                env="REDIS_HOST", check=check_host),
        Setting("redis.port", "int", 6379, "Redis port.", env="REDIS_PORT", minimum=1,
                check=check_port),
        Setting("redis.password", "str", "", "Redis password.", env="REDIS_PASSWORD",
                secret=True),
        Setting("redis.db", "int", 0, "Redis database number.", env="REDIS_DB", minimum=0),
        Setting("redis.prefix", "str", "mistral-sidecar:",
                "Prefix of every Redis key this sidecar writes."),
        Setting("redis.timeout_ms", "int", 50,
                "Longest wait for any Redis call; past it the plugin's failure mode applies.",
                minimum=1),
        Setting("plugins.chain", "list",
                list(DEFAULT_CHAIN),
                "Plugins to load, in chain order (names from the mistral_sidecar entry-point "
                "group, or importable module paths).", deprecated_env=("SIDECAR_PLUGINS",)),
    ]
