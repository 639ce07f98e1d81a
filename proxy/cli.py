"""The ``mistral-sidecar`` command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import logging.handlers
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from proxy import __version__
from proxy.chain import PluginChain, installed_plugins
from proxy.loader import config_path, load, validation_problems
from proxy.settings import ConfigError, Setting, Settings, core_settings, resolve, resolve_all

logger = logging.getLogger("mistral_sidecar")
_config_logger = logging.getLogger("mistral_sidecar.config")
#: What loading the configuration logs (deprecated variable names), held until logging is set
#: up: for ``serve`` that is once the plugins have started, so that with the logs plugin these
#: lines are JSON like every other.
_held = logging.handlers.BufferingHandler(capacity=10_000)

DESCRIPTION = """\
A hardening reverse proxy for the Mistral API. Point any Mistral client at it
(Mistral(server_url="http://localhost:8080")) and it authenticates callers, enforces roles,
rate-limits, retries, breaks circuits, logs, persists and forwards to the real API.

Configuration comes from environment variables (MISTRAL_API_KEY, MISTRAL_BASE_URL, DB_HOST,
REDIS_HOST ..., and SIDECAR_<SECTION>_<NAME> for the rest, such as SIDECAR_SERVER_PORT for
server.port) and an optional YAML file (--config or SIDECAR_CONFIG).
`mistral-sidecar settings` lists every setting with its variable and default."""


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )


def _hold_config_warnings() -> None:
    """Keep what the configuration logs from here on until :func:`_release_config_warnings`."""
    _config_logger.addHandler(_held)
    _config_logger.propagate = False


def _release_config_warnings(emit: bool = True) -> None:
    """Log what was held through the handlers configured now (or, with ``emit`` false, drop
    it: a process whose workers log it themselves); later lines are logged as they come."""
    _config_logger.removeHandler(_held)
    _config_logger.propagate = True
    records, _held.buffer = _held.buffer, []
    for record in records if emit else ():
        if _config_logger.isEnabledFor(record.levelno):
            _config_logger.handle(record)


def _fail_config(error: ConfigError) -> int:
    for problem in error.problems:
        print(f"mistral-sidecar: configuration error: {problem}", file=sys.stderr)
    return 2


def _load(args: argparse.Namespace, environ: Mapping[str, str] | None = None,
          serving: bool = False) -> tuple[Settings, PluginChain]:
    """Settings and chain for a command, from ``environ`` (default: the process environment);
    ``serving`` for the commands that serve requests (the others run without what only
    serving needs, such as the upstream key)."""
    environ = dict(os.environ if environ is None else environ)
    loaded = load(config_path(getattr(args, "config", None), environ), environ, serving=serving)
    if not serving:
        _release_config_warnings()
    return loaded


def _environ_with(base: Mapping[str, str], values: Mapping[str, str],
                  declared: Iterable[Setting], only_if_unset: bool = False) -> dict[str, str]:
    """``base`` (an environment) with ``values`` (by setting name) set under each setting's
    variable, replacing what its current or deprecated variables say; with ``only_if_unset``,
    only for settings ``base`` leaves unset."""
    environ = dict(base)
    for setting in declared:
        if setting.name not in values or setting.env is None:
            continue
        names = setting.variables()
        if only_if_unset and any(environ.get(name) for name in names):
            continue
        # A deprecated variable left behind would contradict the value given here.
        for name in names:
            environ.pop(name, None)
        environ[setting.env] = values[setting.name]
    return environ


# --- serve -----------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the sidecar until SIGTERM, in one process or several workers."""
    overrides = {}
    if args.host:
        overrides["server.host"] = args.host
    if args.port is not None:
        overrides["server.port"] = str(args.port)
    if args.workers is not None:
        overrides["server.workers"] = str(args.workers)
    environ = _environ_with(os.environ, overrides, core_settings())
    try:
        # Only the worker count, needed before plugins load; every problem is reported
        # together by the full load below.
        core, _problems = resolve_all(core_settings(), environ=environ,
                                      config_file=config_path(args.config, environ),
                                      strict=False)
    except ConfigError as error:
        return _fail_config(error)
    workers = int(core["server.workers"])
    if workers > 1:
        if core["server.port"] == 0:
            return _fail_config(ConfigError(
                ["server.workers (SIDECAR_SERVER_WORKERS): several workers need a fixed "
                 "SIDECAR_SERVER_PORT, not 0"]))
    # Workers report metrics through files in one directory they share.
    metrics_dir = None
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        import tempfile

        metrics_dir = tempfile.mkdtemp(prefix="sidecar-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        settings, chain = _load(args, environ, serving=True)
    except ConfigError as error:
        return _fail_config(error)
    _configure_logging(settings["log.level"])
    if workers == 1:
        return _serve_one(settings, chain, reuse_port=False)
    from proxy.workers import run_workers

    try:
        return run_workers(workers, lambda: _serve_one(settings, chain, reuse_port=True))
    finally:
        _release_config_warnings(emit=False)
        if metrics_dir is not None:
            import shutil

            shutil.rmtree(metrics_dir, ignore_errors=True)


def _serve_one(settings: Settings, chain: PluginChain, reuse_port: bool) -> int:
    """Serve in this process until SIGTERM; the exit code."""
    from proxy.app import create_app
    from proxy.door import DoorConfig
    from proxy.server import serve_until_signal

    def announce(port: int) -> None:
        # A log line, so that it is JSON like every other line when the logs plugin is on.
        _release_config_warnings()
        logger.info(
            "mistral-sidecar %s listening on http://%s:%s -> %s (pid %s; plugins: %s)",
            __version__, settings["server.host"], port, settings["upstream.base_url"],
            os.getpid(), ", ".join(chain.names) or "none",
            extra={"version": __version__, "port": port, "pid": os.getpid(),
                   "upstream": settings["upstream.base_url"], "plugins": chain.names})

    try:
        asyncio.run(serve_until_signal(
            create_app(settings, chain), settings["server.host"], settings["server.port"],
            settings["server.shutdown_grace_seconds"], on_ready=announce,
            reuse_port=reuse_port, gc_threshold=settings["server.gc_threshold"],
            door=DoorConfig.from_settings(settings), ops_port=int(settings["ops.port"])))
    except ConfigError as error:
        return _fail_config(error)
    except Exception as error:
        # A plugin's start-up failed (database down, schema not migrated, port taken ...):
        # one line that says why, not a traceback.
        print(f"mistral-sidecar: cannot start: {error}", file=sys.stderr)
        return 1
    return 0


# --- mock-upstream and demo ------------------------------------------------------------------


def cmd_mock_upstream(args: argparse.Namespace) -> int:
    """Run the fake Mistral API."""
    from proxy import mock_upstream

    _configure_logging("INFO")
    mock_upstream.run_mock(args.host, args.port, mock_upstream.config_from_args(args))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the mock upstream and the sidecar in front of it, in one process."""
    from proxy import mock_upstream
    from proxy.app import create_app
    from proxy.door import DoorConfig
    from proxy.server import serve_until_signal

    # The demo needs no keys: callers' own bearer tokens pass through to the mock, which
    # accepts any, and the embedded store migrates itself.
    # Passthrough callers are admins here, so that every README example (agents included)
    # works offline; the demo listens on loopback only.
    declared = all_declared_settings()
    environ = _environ_with(os.environ, {"auth.mode": "passthrough",
                                         "auth.passthrough.role": "admin",
                                         "db.migrate_on_start": "true"},
                            declared, only_if_unset=True)
    environ = _environ_with(environ, {"upstream.base_url": f"http://127.0.0.1:{args.mock_port}",
                                      "upstream.api_key": "demo-upstream-key",
                                      "server.port": str(args.port)}, declared)
    try:
        settings, chain = _load(args, environ, serving=True)
    except ConfigError as error:
        return _fail_config(error)
    _configure_logging(settings["log.level"])

    async def run() -> None:
        from aiohttp import web

        mock_app = mock_upstream.create_mock_app(
            mock_upstream.MockConfig(api_keys=frozenset(), token_interval_ms=50))
        runner = web.AppRunner(mock_app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", args.mock_port).start()
        try:
            await serve_until_signal(
                create_app(settings, chain), settings["server.host"], args.port,
                settings["server.shutdown_grace_seconds"], on_ready=announce,
                door=DoorConfig.from_settings(settings), ops_port=int(settings["ops.port"]))
        finally:
            await runner.cleanup()

    def announce(port: int) -> None:
        _release_config_warnings()
        example = (f"curl -s http://127.0.0.1:{port}/v1/chat/completions -H 'Content-Type: "
                   "application/json' -H 'Authorization: Bearer any-key' -d '{\"model\":"
                   "\"mistral-small-latest\",\"messages\":[{\"role\":\"user\",\"content\":"
                   "\"hello\"}]}'")
        logger.info("mistral-sidecar demo: sidecar on http://127.0.0.1:%s, mock Mistral API on "
                    "http://127.0.0.1:%s; try: %s", port, args.mock_port, example,
                    extra={"sidecar": f"http://127.0.0.1:{port}",
                           "mock": f"http://127.0.0.1:{args.mock_port}", "try": example})

    try:
        asyncio.run(run())
    except OSError as error:
        print(f"mistral-sidecar: cannot start: {error}", file=sys.stderr)
        return 1
    return 0


# --- introspection ---------------------------------------------------------------------------


def cmd_plugins(args: argparse.Namespace) -> int:
    """Print the enabled plugins in chain order, then installed but disabled ones."""
    try:
        _settings, chain = _load(args)
    except ConfigError as error:
        return _fail_config(error)
    for position, (name, module, hooks) in enumerate(chain.describe(), start=1):
        print(f"{position:2d}. {name:<14} {module:<28} {', '.join(hooks)}")
    disabled = sorted(set(installed_plugins()) - set(chain.names))
    if disabled:
        print(f"installed, not in the chain: {', '.join(disabled)}")
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    """Validate the configuration; print one line per problem. What only ``serve`` needs
    (secrets often given only where it runs) is listed as a note, not a problem."""
    try:
        settings, chain = _load(args)
    except ConfigError as error:
        return _fail_config(error)
    source = settings.source_file or "environment and defaults"
    print(f"configuration OK ({source}); plugins: {', '.join(chain.names) or 'none'}")
    settings.serving = True
    for problem in validation_problems(settings, chain):
        print(f"note: serve will also need {problem}")
    return 0


def settings_reference(declared: Sequence[Any]) -> str:
    """The configuration reference as a Markdown table (README section)."""
    lines = ["| Setting (YAML) | Environment | Default | Description |",
             "| --- | --- | --- | --- |"]
    for setting in sorted(declared, key=lambda s: s.name):
        default = "(secret)" if setting.secret and setting.default else setting.default
        if setting.name == "server.data_dir":
            default = "~/.local/share/mistral-sidecar"
        if isinstance(default, list):
            default = ",".join(str(item) for item in default)
        shown = f"`{default}`" if default not in (None, "", []) else "—"
        if len(shown) > 120:
            # A long structure (the guard's multilingual rules) belongs in the YAML file.
            shown = "see `config/default.yaml`"
        env = f"`{setting.env}`" if setting.env else "—"
        if setting.deprecated_env:
            env += f" (deprecated: {', '.join(f'`{name}`' for name in setting.deprecated_env)})"
        lines.append(f"| `{setting.name}` | {env} | {shown} | {setting.help} |")
    return "\n".join(lines) + "\n"


def settings_yaml(declared: Sequence[Any]) -> str:
    """Every setting with its default as a commented YAML file (config/default.yaml)."""
    import yaml

    lines = ["# mistral-sidecar configuration with every default.",
             "# Generated by `mistral-sidecar settings --format yaml`; environment variables",
             "# (named in the comments) override what a file like this says.", ""]
    previous_section = None
    for setting in sorted(declared, key=lambda s: s.name):
        *sections, leaf = setting.name.split(".")
        section = ".".join(sections)
        if section != previous_section:
            if previous_section is not None:
                lines.append("")
            for depth, part in enumerate(sections):
                if previous_section is None or sections[: depth + 1] != (
                        previous_section.split(".")[: depth + 1]):
                    lines.append("  " * depth + f"{part}:")
            previous_section = section
        indent = "  " * len(sections)
        env = f" [{setting.env}]" if setting.env else ""
        lines.append(f"{indent}# {setting.help}{env}")
        default = setting.default
        if setting.name == "server.data_dir":
            default = "~/.local/share/mistral-sidecar"
        if setting.secret:
            default = "" if isinstance(default, str) else []
        rendered = yaml.safe_dump({leaf: default}, default_flow_style=True, width=10_000,
                                  sort_keys=False).strip()
        lines.append(f"{indent}{rendered[1:-1] if rendered.startswith('{') else rendered}")
    return "\n".join(lines) + "\n"


def all_declared_settings() -> list[Any]:
    """Settings of the core and of every installed plugin."""
    chain = PluginChain(sorted(installed_plugins()))
    declared = list(core_settings())
    for _name, extra in chain.call_all("sidecar_settings"):
        declared.extend(extra or ())
    return declared


def cmd_settings(args: argparse.Namespace) -> int:
    """Print every setting of the core and of all installed plugins."""
    declared = all_declared_settings()
    if args.format == "markdown":
        sys.stdout.write(settings_reference(declared))
    elif args.format == "yaml":
        sys.stdout.write(settings_yaml(declared))
    else:
        try:
            current = resolve(declared, environ=os.environ, strict=False).redacted()
        except ConfigError as error:
            return _fail_config(error)
        for name, value in current.items():
            print(f"{name} = {value!r}")
    return 0


# --- parser ----------------------------------------------------------------------------------


def build_parser(chain: PluginChain | None) -> argparse.ArgumentParser:
    """The argument parser, with plugin commands from ``chain`` (if it could be loaded)."""
    parser = argparse.ArgumentParser(
        prog="mistral-sidecar", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", metavar="FILE",
                       help="YAML configuration file (default: $SIDECAR_CONFIG, if set)")

    serve = sub.add_parser("serve", help="run the sidecar",
                           description="Run the sidecar until SIGTERM, then drain gracefully.")
    common(serve)
    serve.add_argument("--host", help="address to listen on (default: SIDECAR_SERVER_HOST or "
                       "127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default: "
                       "SIDECAR_SERVER_PORT or 8080)")
    serve.add_argument("--workers", type=int, help="worker processes sharing the port "
                       "(default: SIDECAR_SERVER_WORKERS or 1)")
    serve.set_defaults(handler=cmd_serve, core_command=True)

    mock = sub.add_parser(
        "mock-upstream", help="run a fake Mistral API (offline demos, tests, benchmarks)",
        description="Run an in-memory fake of the Mistral API built from its OpenAPI spec: "
        "chat, FIM, embeddings, models, agents, conversations, files and batch jobs, with "
        "fault injection under /__mock__/.")
    from proxy import mock_upstream

    mock_upstream.add_arguments(mock)
    mock.set_defaults(handler=cmd_mock_upstream, core_command=True)

    demo = sub.add_parser("demo", help="run the sidecar in front of the mock upstream",
                          description="Start the mock Mistral API and the sidecar in front of "
                          "it, in one process: a working sidecar with no Mistral account.")
    common(demo)
    demo.add_argument("--port", type=int, default=8080, help="sidecar port (default 8080)")
    demo.add_argument("--mock-port", type=int, default=8081,
                      help="mock upstream port (default 8081)")
    demo.set_defaults(handler=cmd_demo, core_command=True)

    plugins = sub.add_parser("plugins", help="list the loaded plugins in chain order")
    common(plugins)
    plugins.set_defaults(handler=cmd_plugins, core_command=True)

    check = sub.add_parser("check-config", help="validate configuration and exit",
                           description="Validate environment and YAML configuration; exit 2 "
                           "with one line per problem.")
    common(check)
    check.set_defaults(handler=cmd_check_config, core_command=True)

    ref = sub.add_parser("settings", help="list every setting, its variable and default")
    ref.add_argument("--format", choices=("text", "markdown", "yaml"), default="text",
                     help="text: current values; markdown: the README reference; yaml: a "
                     "config file with every default")
    ref.set_defaults(handler=cmd_settings, core_command=True)

    if chain is not None:
        for _name, _result in chain.call_all("register_commands", subparsers=sub):
            pass
    return parser


def _chain_for_commands(argv: Sequence[str]) -> PluginChain | None:
    """Load the configured chain so plugins can add commands; None if config is broken."""
    config = None
    for index, arg in enumerate(argv):
        if arg == "--config" and index + 1 < len(argv):
            config = argv[index + 1]
        elif arg.startswith("--config="):
            config = arg.split("=", 1)[1]
    try:
        path = config_path(config)
        first = resolve(core_settings(), config_file=path, strict=False)
        return PluginChain(list(first["plugins.chain"]))
    except ConfigError:
        return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mistral-sidecar`` console script."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    _hold_config_warnings()
    try:
        parser = build_parser(_chain_for_commands(args_list))
        args = parser.parse_args(args_list)
        handler = args.handler
        if getattr(args, "core_command", False):
            return int(handler(args))
        try:
            settings, _chain = _load(args)
        except ConfigError as error:
            return _fail_config(error)
        return int(handler(args, settings))
    except BrokenPipeError:
        # The reader went away (`mistral-sidecar settings | head`): stop quietly, as a
        # command killed by SIGPIPE would, instead of printing a traceback.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + 13
    finally:
        # Whatever was not logged yet (a command that stopped before): now, as it is.
        _release_config_warnings()


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["main", "settings_reference"]
