"""A plugin as a third party would write one (``tests.core.third_party_plugin``): a setting
of its own, a check of it, a command and lines on ``/metrics``."""

from __future__ import annotations

import argparse
from typing import Any

from aiohttp import web

from proxy import hookimpl
from proxy.settings import Setting, Settings


@hookimpl
def sidecar_settings() -> list[Setting]:
    """One setting, read from SIDECAR_ACME_GREETING."""
    return [Setting("acme.greeting", "str", "hello", "What the acme command prints.",
                    env="SIDECAR_ACME_GREETING")]


@hookimpl
def validate_settings(settings: Settings) -> list[str]:
    """A greeting must say something."""
    if not settings["acme.greeting"].strip():
        return ["acme.greeting (SIDECAR_ACME_GREETING): must not be blank"]
    return []


def _hello(args: argparse.Namespace, settings: Settings) -> int:
    print(settings["acme.greeting"])
    return 0


@hookimpl
def register_commands(subparsers: argparse._SubParsersAction[Any]) -> None:
    """``mistral-sidecar acme-hello``."""
    subparsers.add_parser("acme-hello", help="print the greeting").set_defaults(handler=_hello)


@hookimpl
def metrics_exposition(app: web.Application) -> bytes:
    """One series of its own."""
    return b"# TYPE acme_up gauge\nacme_up 1\n"
