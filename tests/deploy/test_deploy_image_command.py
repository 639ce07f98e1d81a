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
    ecs_container_env,
    ecs_task_definitions,
    healthcheck_command,
    image_command,
    load_compose,
    shutdown_seconds,
)

COMPOSE = load_compose()
SERVICES = COMPOSE["services"]
SIDECAR_SERVICE = SERVICES["sidecar"]
MOCK_SERVICE = SERVICES["mock-upstream"]
MOCK_COMMAND: list[str] = MOCK_SERVICE["command"]


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


def _on_this_machine(env: dict[str, str | None], pg: dict[str, str],
                     redis_env: dict[str, str], mock_url: str, data_dir: Path
                     ) -> dict[str, str]:
    """A deployment file's sidecar environment, pointed at this machine's services.

    Hosts become the test PostgreSQL (a fresh database), Redis (a fresh key prefix) and mock
    upstream; secret references get the values those local services accept.
    """
    out = {k: v for k, v in env.items() if v is not None}
    out.update(pg)
    out["DB_PASSWORD"] = os.environ.get("PGPASSWORD", "")
    if "REDIS_HOST" in out:
        out["REDIS_HOST"], out["REDIS_PORT"] = REDIS_HOST, str(REDIS_PORT)
        out.pop("REDIS_PASSWORD", None)
        out.update(redis_env)
    if "MISTRAL_BASE_URL" in out or "MISTRAL_API_KEY" in env:
        out["MISTRAL_BASE_URL"] = mock_url
        out["MISTRAL_API_KEY"] = MOCK_COMMAND[MOCK_COMMAND.index("--api-key") + 1]
        # The local mock speaks plain HTTP, which production refuses without this opt-in.
        out["SIDECAR_UPSTREAM_ALLOW_PLAIN_HTTP"] = "true"
    out["SIDECAR_SERVER_HOST"] = "127.0.0.1"
    out["SIDECAR_SERVER_PORT"] = str(free_port())
    out["SIDECAR_SERVER_DATA_DIR"] = str(data_dir)
    return out


def _start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(command, env=_process_env(env), stdout=out,
                                stderr=subprocess.STDOUT, cwd=log.parent)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)


def test_image_command_serves_with_the_compose_environment_and_drains_on_sigterm(
    tmp_path: Path,
    pg_database: dict[str, str],
    redis_env: dict[str, str],
    mock_from_compose: str,
) -> None:
    compose = compose_env(SIDECAR_SERVICE)
    assert urlsplit(compose["MISTRAL_BASE_URL"]).hostname in SERVICES
    assert compose["DB_HOST"] in SERVICES and compose["REDIS_HOST"] in SERVICES
    env = _on_this_machine(dict(compose), pg_database, redis_env, mock_from_compose,
                           tmp_path / "data")
    log = tmp_path / "sidecar.log"
    proc = _start(image_command(), env, log)
    url = f"http://127.0.0.1:{env['SIDECAR_SERVER_PORT']}"
    try:
        _wait_until_up(url + "/healthz", proc, log)
        # Ready means the database, Redis and every other dependency named in compose answer.
        assert _get(url + "/readyz") == 200, log.read_text(errors="replace")

        # The image's HEALTHCHECK, run as Docker would (same environment), passes.
        check = subprocess.run(healthcheck_command(), env=_process_env(env),
                               capture_output=True, timeout=10)
        assert check.returncode == 0, check.stderr

        proc.send_signal(signal.SIGTERM)
        budget = shutdown_seconds(dict(env))
        assert proc.wait(timeout=budget + 5) == 0, log.read_text(errors="replace")
    finally:
        _stop(proc)

    # A stopped sidecar fails the same healthcheck, so Docker would report it unhealthy.
    check = subprocess.run(healthcheck_command(), env=_process_env(env),
                           capture_output=True, timeout=10)
    assert check.returncode != 0


def test_production_flow_migration_task_then_sidecar_without_migrate_on_start(
    tmp_path: Path,
    pg_database: dict[str, str],
    redis_env: dict[str, str],
    mock_from_compose: str,
) -> None:
    """ECS as written: replicas refuse a stale schema; the migration task fixes it; they serve."""
    tasks = {path.name: task for path, task in ecs_task_definitions()}
    (migrate,) = tasks["migrate-task-definition.json"]["containerDefinitions"]
    sidecar = next(c for c in tasks["task-definition.json"]["containerDefinitions"]
                   if "mistral-sidecar" in c["image"])
    entrypoint = image_command()[:1]  # ECS `command` replaces CMD, keeps ENTRYPOINT

    serve_env = _on_this_machine(ecs_container_env(sidecar), pg_database, redis_env,
                                 mock_from_compose, tmp_path / "serve-data")
    assert serve_env["SIDECAR_DB_MIGRATE_ON_START"] == "false"
    early = subprocess.run([*entrypoint, *sidecar["command"]], env=_process_env(serve_env),
                           capture_output=True, text=True, timeout=60)
    assert early.returncode != 0
    assert "mistral-sidecar migrate" in early.stderr.strip().splitlines()[-1]

    migrate_env = _on_this_machine(ecs_container_env(migrate), pg_database, redis_env,
                                   mock_from_compose, tmp_path / "migrate-data")
    done = subprocess.run([*entrypoint, *migrate["command"]], env=_process_env(migrate_env),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr

    log = tmp_path / "serve.log"
    proc = _start([*entrypoint, *sidecar["command"]], serve_env, log)
    url = f"http://127.0.0.1:{serve_env['SIDECAR_SERVER_PORT']}"
    try:
        _wait_until_up(url + "/readyz", proc, log)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=shutdown_seconds(dict(serve_env)) + 5) == 0
    finally:
        _stop(proc)


def test_compose_stop_grace_period_covers_the_drain_and_the_final_flush() -> None:
    budget = shutdown_seconds(dict(compose_env(SIDECAR_SERVICE)))
    stop = _grace_period_seconds(str(SIDECAR_SERVICE["stop_grace_period"]))
    assert budget + 2 <= stop <= budget + 30
