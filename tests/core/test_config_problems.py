"""Bad configuration is reported whole: every problem in one run, one line each, exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("SIDECAR_", "MISTRAL_", "DB_", "REDIS_", "RATE_LIMIT_",
                                  "LOG_LEVEL"))}
    return subprocess.run([sys.executable, "-m", "proxy.cli", *args], env={**clean, **env},
                          capture_output=True, text=True, cwd=REPO, timeout=60)


BAD = {
    "MISTRAL_API_KEY": "k",
    "RATE_LIMIT_REQUESTS": "abc",          # a plugin's setting
    "LOG_LEVEL": "LOUD",                    # core settings
    "SIDECAR_SERVER_PORT": "70000",
    "DB_PORT": "99999",                     # a port out of range
    "REDIS_HOST": "not a host",
    "SIDECAR_RATELIMT_ENFORCE": "true",     # misspelt
}


@pytest.mark.parametrize("command", ["check-config", "serve"])
def test_every_problem_is_reported_in_one_run(command: str) -> None:
    result = _cli(command, env=BAD)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert all(line.startswith("mistral-sidecar: configuration error:") for line in lines)
    for name in ("RATE_LIMIT_REQUESTS", "LOG_LEVEL", "SIDECAR_SERVER_PORT", "DB_PORT",
                 "REDIS_HOST"):
        assert sum(name in line for line in lines) == 1, (name, result.stderr)
    misspelt = [line for line in lines if "SIDECAR_RATELIMT_ENFORCE" in line]
    assert len(misspelt) == 1 and "did you mean SIDECAR_RATELIMIT_ENFORCE" in misspelt[0]
    assert len(lines) == 6


def test_a_variable_of_a_plugin_outside_the_chain_is_not_unknown() -> None:
    result = _cli("check-config",
                  env={"SIDECAR_PLUGINS_CHAIN": "via", "SIDECAR_GUARD_MODE": "block"})
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(("name", "value"), [
    ("MISTRAL_BASE_URL", "https://user:pw@api.mistral.ai"),
    ("MISTRAL_BASE_URL", "https://api.mistral.ai:99999"),
    ("MISTRAL_BASE_URL", "https://api.mistral.ai/?x=1"),
    ("MISTRAL_BASE_URL", "https://"),
    ("SIDECAR_SERVER_HOST", "0.0.0.0:8080"),
])
def test_addresses_are_checked(name: str, value: str) -> None:
    result = _cli("check-config", env={"SIDECAR_PLUGINS_CHAIN": "via", name: value})
    assert result.returncode == 2
    assert name in result.stderr


@pytest.mark.parametrize("command", [["plugins"], ["migrate"], ["keys", "list"], ["usage"],
                                     ["check-config"]])
def test_commands_that_never_call_mistral_run_without_its_key(
    command: list[str], tmp_path: Path
) -> None:
    env = {"SIDECAR_SERVER_DATA_DIR": str(tmp_path)}
    if command != ["migrate"]:
        assert _cli("migrate", env=env).returncode == 0
    result = _cli(*command, env=env)
    assert result.returncode == 0, result.stderr
    if command == ["check-config"]:
        assert "note: serve will also need MISTRAL_API_KEY" in result.stdout


def test_serve_still_needs_the_key(tmp_path: Path) -> None:
    result = _cli("serve", env={"SIDECAR_SERVER_DATA_DIR": str(tmp_path)})
    assert result.returncode == 2
    assert "MISTRAL_API_KEY: required" in result.stderr


@pytest.mark.parametrize(("unsafe", "named"), [
    ({"MISTRAL_BASE_URL": "http://api.mistral.ai"}, "MISTRAL_BASE_URL"),
    ({"SIDECAR_LOG_CONTENT": "true"}, "SIDECAR_LOG_CONTENT"),
    ({"SIDECAR_AUTH_MODE": "passthrough"}, "SIDECAR_AUTH_MODE"),
])
def test_production_refuses_unsafe_settings(unsafe: dict[str, str], named: str,
                                            tmp_path: Path) -> None:
    env = {"MISTRAL_API_KEY": "k", "SIDECAR_SERVER_DATA_DIR": str(tmp_path), **unsafe}
    assert _cli("check-config", env=env).stdout.count("note:") == 0
    production = _cli("serve", env={**env, "ENVIRONMENT": "production"})
    assert production.returncode == 2
    assert named in production.stderr and "ENVIRONMENT=production" in production.stderr
    checked = _cli("check-config", env={**env, "ENVIRONMENT": "production"})
    assert f"note: serve will also need {named}" in checked.stdout


def test_passthrough_in_production_with_the_opt_in(tmp_path: Path) -> None:
    env = {"MISTRAL_API_KEY": "k", "SIDECAR_SERVER_DATA_DIR": str(tmp_path),
           "ENVIRONMENT": "production", "SIDECAR_AUTH_MODE": "passthrough",
           "SIDECAR_AUTH_PASSTHROUGH_ALLOW_IN_PRODUCTION": "true"}
    checked = _cli("check-config", env=env)
    assert checked.returncode == 0 and "note:" not in checked.stdout


def test_a_plain_http_upstream_in_production_with_the_opt_in(tmp_path: Path) -> None:
    env = {"MISTRAL_API_KEY": "k", "SIDECAR_SERVER_DATA_DIR": str(tmp_path),
           "ENVIRONMENT": "production", "MISTRAL_BASE_URL": "http://egress.internal:3128",
           "SIDECAR_UPSTREAM_ALLOW_PLAIN_HTTP": "true"}
    checked = _cli("check-config", env=env)
    assert checked.returncode == 0 and "note:" not in checked.stdout
