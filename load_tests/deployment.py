"""The sidecar deployment the benchmarks measure: its plugin chain and what runs around it.

By default the deployment operators run: the chain on PostgreSQL (a database created for the
run and dropped afterwards) and Redis (keys under a fresh prefix, deleted afterwards), JSON
access lines at INFO into a file. Embedded: SQLite in a temporary directory and the
in-process limiter, for a machine without those servers.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import redis

from load_tests.harness import MOCK_KEY, bench_caller_key, cli, scratch_database
from proxy.settings import DEFAULT_CHAIN

#: The Redis server benchmarks use.
REDIS = {"host": os.environ.get("TEST_REDIS_HOST", "127.0.0.1"),
         "port": os.environ.get("TEST_REDIS_PORT", "6379")}
#: Caller key sent when the chain has no ``auth`` plugin to check it.
ANY_CALLER_KEY = "any-caller-key"


def chain_of(spec: str) -> list[str]:
    """The plugin chain ``spec`` names: ``default``, ``default-NAME[,NAME]`` (the default
    chain without those) or an explicit comma-separated chain."""
    if spec == "default":
        return list(DEFAULT_CHAIN)
    if spec.startswith("default-"):
        without = [name for name in spec.removeprefix("default-").split(",") if name]
        unknown = [name for name in without if name not in DEFAULT_CHAIN]
        if unknown:
            raise SystemExit(f"not in the default chain: {', '.join(unknown)}")
        return [name for name in DEFAULT_CHAIN if name not in without]
    return [name for name in spec.split(",") if name]


def common_env(upstream: str) -> dict[str, str]:
    """What every benchmarked sidecar gets: ``upstream`` with its key, a request limit no
    run reaches (the limiter still counts every request) and JSON logs at INFO, not on
    standard output (each sidecar names its log file with ``SIDECAR_LOG_FILE``)."""
    return {"MISTRAL_BASE_URL": upstream, "MISTRAL_API_KEY": MOCK_KEY,
            "RATE_LIMIT_REQUESTS": "50000000", "RATE_LIMIT_WINDOW": "60",
            "LOG_LEVEL": "INFO", "SIDECAR_LOG_STDOUT": "false"}


def deployment_env(db_env: dict[str, str], upstream: str) -> dict[str, str]:
    """:func:`common_env` on PostgreSQL (``db_env``) and Redis under a fresh key prefix."""
    return {**common_env(upstream), **db_env,
            "REDIS_HOST": REDIS["host"], "REDIS_PORT": REDIS["port"],
            "SIDECAR_REDIS_PREFIX": f"bench-{uuid.uuid4().hex[:8]}:"}


def delete_redis_keys(prefix: str) -> None:
    """Delete every key under ``prefix`` from the benchmarks' Redis."""
    client = redis.Redis(host=REDIS["host"], port=int(REDIS["port"]))
    try:
        for key in client.scan_iter(match=prefix + "*", count=1000):
            client.delete(key)
    finally:
        client.close()


@dataclass(frozen=True)
class Deployment:
    """A ready deployment: the sidecar's environment and the key callers present."""

    env: dict[str, str]
    caller_key: str
    #: ``PostgreSQL + Redis`` or ``embedded (SQLite + in-process limits)``.
    kind: str


@contextlib.contextmanager
def deployment(upstream: str, chain: list[str], embedded: bool, workdir: Path
               ) -> Iterator[Deployment]:
    """The deployment of ``chain`` in front of ``upstream``, migrated, with a caller key
    when the chain checks keys; files (SQLite, access log) go under ``workdir``. The
    database and the Redis keys are gone when the block ends."""
    with contextlib.ExitStack() as stack:
        if embedded:
            env = {**common_env(upstream), "SIDECAR_SERVER_DATA_DIR": str(workdir / "data")}
            kind = "embedded (SQLite + in-process limits)"
        else:
            env = deployment_env(stack.enter_context(scratch_database()), upstream)
            stack.callback(delete_redis_keys, env["SIDECAR_REDIS_PREFIX"])
            kind = "PostgreSQL + Redis"
        env |= {"SIDECAR_PLUGINS_CHAIN": ",".join(chain),
                "SIDECAR_LOG_FILE": str(workdir / "access.log")}
        if "store" in chain:
            cli(env, "migrate")
        caller_key = bench_caller_key(env) if "auth" in chain else ANY_CALLER_KEY
        yield Deployment(env, caller_key, kind)
