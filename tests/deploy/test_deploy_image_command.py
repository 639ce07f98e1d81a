"""The image's command, run directly here with the compose file's environment, serves and drains.

No Docker engine exists on the test machine, so the test runs what the container would run
(ENTRYPOINT + CMD from the Dockerfile, the mock upstream's ``command`` from compose) as local
processes, with the compose service names rewritten to the local PostgreSQL, Redis and mock.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import REDIS_HOST, REDIS_PORT, free_port
from tests.deploy.deploy_helpers import (
    compose_env,
    healthcheck_command,
    image_command,
    load_compose,
)

COMPOSE = load_compose()
SERVICES = COMPOSE["services"]
SIDECAR_SERVICE = SERVICES["sidecar"]
MOCK_SERVICE = SERVICES["mock-upstream"]


def _process_env(overrides: dict[str, str]) -> dict[str, str]:
    """The machine's environment without sidecar settings, the venv's bin first on PATH."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SIDECAR_", "MISTRAL_", "DB_", "REDIS_", "RATE_LIMIT_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(overrides)
    return env


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as error:
        return error.code


def _wait_until_up(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
        try:
            if _get(url) == 200:
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.05)
    pytest.fail(f"{url} did not answer 200:\n{log.read_text(errors='replace')}")


def _grace_period_seconds(value: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    for suffix in ("ms", "s", "m", "h"):
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * units[suffix]
    return float(value)


@pytest.fixture
def mock_from_compose(tmp_path: Path) -> Iterator[str]:
    """The compose ``mock-upstream`` service's command, on a free loopback port."""
    command = list(MOCK_SERVICE["command"])
    port = free_port()
    command[command.index("--host") + 1] = "127.0.0.1"
    command[command.index("--port") + 1] = str(port)
    log = tmp_path / "mock.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([image_command()[0], *command], env=_process_env({}),
                                stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(url + "/__mock__/settings", proc, log)
        yield url
    finally:
        proc.kill()
        proc.wait(timeout=10)


def _local_env(pg: dict[str, str], redis_env: dict[str, str], mock_url: str,
               data_dir: Path) -> dict[str, str]:
    """The compose sidecar environment, with service names rewritten to local services."""
    env = compose_env(SIDECAR_SERVICE)
    assert urlsplit(env["MISTRAL_BASE_URL"]).hostname in SERVICES
    assert env["DB_HOST"] in SERVICES and env["REDIS_HOST"] in SERVICES
    env.update(pg)
    env["DB_PASSWORD"] = os.environ.get("PGPASSWORD", "")
    env["REDIS_HOST"], env["REDIS_PORT"] = REDIS_HOST, str(REDIS_PORT)
    env.update(redis_env)
    env["MISTRAL_BASE_URL"] = mock_url
    env["SIDECAR_HOST"] = "127.0.0.1"
    env["SIDECAR_PORT"] = str(free_port())
    env["SIDECAR_DATA_DIR"] = str(data_dir)
    return env


def test_image_command_serves_with_the_compose_environment_and_drains_on_sigterm(
    tmp_path: Path,
    pg_database: dict[str, str],
    redis_env: dict[str, str],
    mock_from_compose: str,
) -> None:
    env = _local_env(pg_database, redis_env, mock_from_compose, tmp_path / "data")
    command = image_command()
    log = tmp_path / "sidecar.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(command, env=_process_env(env), stdout=out,
                                stderr=subprocess.STDOUT, cwd=tmp_path)
    url = f"http://127.0.0.1:{env['SIDECAR_PORT']}"
    try:
        _wait_until_up(url + "/healthz", proc, log)
        # Ready means the database, Redis and every other dependency named in compose answer.
        assert _get(url + "/readyz") == 200, log.read_text(errors="replace")

        # The image's HEALTHCHECK, run as Docker would (same environment), passes.
        check = subprocess.run(healthcheck_command(), env=_process_env(env),
                               capture_output=True, timeout=10)
        assert check.returncode == 0, check.stderr

        proc.send_signal(signal.SIGTERM)
        grace = float(env["SIDECAR_SHUTDOWN_GRACE_SECONDS"])
        assert proc.wait(timeout=grace + 5) == 0, log.read_text(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)

    # A stopped sidecar fails the same healthcheck, so Docker would report it unhealthy.
    check = subprocess.run(healthcheck_command(), env=_process_env(env),
                           capture_output=True, timeout=10)
    assert check.returncode != 0


def test_compose_stop_grace_period_covers_the_drain() -> None:
    grace = float(compose_env(SIDECAR_SERVICE)["SIDECAR_SHUTDOWN_GRACE_SECONDS"])
    stop = _grace_period_seconds(str(SIDECAR_SERVICE["stop_grace_period"]))
    assert grace + 2 <= stop <= grace + 30
