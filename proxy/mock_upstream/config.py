"""Configuration of the mock upstream and its command-line arguments."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

DEFAULT_API_KEY = "mock-upstream-key"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8081


@dataclass
class MockConfig:
    """Start-up settings of a mock upstream.

    ``api_keys`` lists the bearer tokens accepted on ``/v1``; an empty set accepts any
    non-empty token. ``latency_ms`` delays every ``/v1`` answer before its headers,
    ``token_interval_ms`` spaces SSE frames, ``stream_tokens`` is the number of content
    delta frames of a streamed answer and ``seed`` perturbs the generated embeddings.
    The three timing/streaming values can be changed at run time through
    ``PUT /__mock__/settings``.
    """

    api_keys: frozenset[str] = frozenset({DEFAULT_API_KEY})
    latency_ms: float = 0.0
    token_interval_ms: float = 0.0
    stream_tokens: int = 8
    seed: int = 0
    #: Compress ``/v1`` answers with gzip for callers that accept it, as a real API may
    #: (``PUT /__mock__/settings {"gzip": true}``).
    gzip: bool = False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the mock upstream's options to ``parser`` (used by ``mistral-sidecar mock-upstream``)."""
    parser.add_argument("--host", default=DEFAULT_HOST, help="interface to listen on")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port to listen on")
    parser.add_argument(
        "--api-key",
        dest="api_keys",
        action="append",
        default=None,
        metavar="KEY",
        help=f"accepted bearer token, repeatable (default: {DEFAULT_API_KEY}); "
        "pass an empty string to accept any non-empty token",
    )
    parser.add_argument(
        "--latency-ms", type=float, default=0.0, help="delay before every response's headers"
    )
    parser.add_argument(
        "--token-interval-ms", type=float, default=0.0, help="delay between streamed frames"
    )
    parser.add_argument(
        "--stream-tokens", type=int, default=8, help="content delta frames per streamed answer"
    )


def config_from_args(ns: argparse.Namespace) -> MockConfig:
    """Build a :class:`MockConfig` from arguments parsed with :func:`add_arguments`."""
    keys = getattr(ns, "api_keys", None)
    api_keys = frozenset({DEFAULT_API_KEY}) if keys is None else frozenset(k for k in keys if k)
    return MockConfig(
        api_keys=api_keys,
        latency_ms=float(ns.latency_ms),
        token_interval_ms=float(ns.token_interval_ms),
        stream_tokens=int(ns.stream_tokens),
    )
