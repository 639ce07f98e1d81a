"""One configuration vocabulary: the deployment guide's variable names, SIDECAR_<SECTION>_<NAME>
for every other setting, and the names used before as deprecated aliases that still work."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from proxy.cli import all_declared_settings, settings_reference
from proxy.loader import unknown_variables
from proxy.settings import ConfigError, Setting, core_settings, derived_env, resolve
from tests.conftest import REPO

#: The names the deployment guide gives; every other variable is derived from its setting.
# The deployment guide's names, and OpenTelemetry's standard exporter variables.
GUIDE = re.compile(r"(MISTRAL_API_KEY|MISTRAL_BASE_URL|LOG_LEVEL|ENVIRONMENT"
                   r"|(DB|REDIS|RATE_LIMIT|DATADOG)_[A-Z0-9_]+"
                   r"|OTEL_(EXPORTER_OTLP_ENDPOINT|EXPORTER_OTLP_HEADERS|SERVICE_NAME))")


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("SIDECAR_", "MISTRAL_", "DB_", "REDIS_", "RATE_LIMIT_",
                                  "LOG_LEVEL", "ENVIRONMENT", "OTEL_"))}
    return subprocess.run([sys.executable, "-m", "proxy.cli", *args], env={**clean, **env},
                          capture_output=True, text=True, cwd=REPO, timeout=60)


def _deprecation_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "is deprecated: use" in line]


def test_every_setting_reads_the_guide_name_or_its_derived_name() -> None:
    """A plugin that declares SIDECAR_FOO for setting bar.baz fails here."""
    stray = [f"{s.name} reads {s.env} (expected {derived_env(s.name)})"
             for s in all_declared_settings()
             if s.env is not None and s.env != derived_env(s.name)
             and not GUIDE.fullmatch(s.env)]
    assert not stray, stray


def test_deprecated_names_are_not_current_names() -> None:
    declared = all_declared_settings()
    current = {s.env for s in declared}
    old = [name for s in declared for name in s.deprecated_env]
    assert not current & set(old)
    assert len(old) == len(set(old))


def test_the_variable_is_derived_from_the_dotted_name() -> None:
    setting = Setting("cache.ttl_seconds", "int", 60, "How long entries are kept.")
    assert setting.env == "SIDECAR_CACHE_TTL_SECONDS"
    settings = resolve([setting], environ={"SIDECAR_CACHE_TTL_SECONDS": "5"})
    assert settings["cache.ttl_seconds"] == 5


def test_core_settings_read_their_derived_names() -> None:
    settings = resolve(core_settings(), environ={
        "SIDECAR_SERVER_HEADER_TIMEOUT_SECONDS": "2.5",
        "SIDECAR_LIMITS_MAX_JSON_BODY_BYTES": "1000",
        "SIDECAR_PLUGINS_CHAIN": "logs,via"})
    assert settings["server.header_timeout_seconds"] == 2.5
    assert settings["limits.max_json_body_bytes"] == 1000
    assert settings["plugins.chain"] == ["logs", "via"]


def test_a_deprecated_name_is_read_and_warned_about_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A name of its own: the warning is once per process, and other tests may have used
    # the real deprecated names already.
    old = f"SIDECAR_OLD_{uuid.uuid4().hex.upper()}"
    declared = [Setting("cache.ttl_seconds", "int", 60, "t", deprecated_env=(old,))]
    with caplog.at_level(logging.WARNING, logger="mistral_sidecar.config"):
        first = resolve(declared, environ={old: "7"})
        second = resolve(declared, environ={old: "8"})
    assert (first["cache.ttl_seconds"], second["cache.ttl_seconds"]) == (7, 8)
    warnings = [r.getMessage() for r in caplog.records if r.name == "mistral_sidecar.config"]
    assert warnings == [f"environment variable {old} is deprecated: use "
                        "SIDECAR_CACHE_TTL_SECONDS"]


def test_the_current_name_wins_when_both_say_the_same() -> None:
    declared = [Setting("cache.ttl_seconds", "int", 60, "t", deprecated_env=("OLD_TTL",))]
    settings = resolve(declared, environ={"SIDECAR_CACHE_TTL_SECONDS": "9", "OLD_TTL": "9"})
    assert settings["cache.ttl_seconds"] == 9


def test_current_and_deprecated_names_that_disagree_are_one_problem() -> None:
    declared = [Setting("cache.ttl_seconds", "int", 60, "t", deprecated_env=("OLD_TTL",)),
                Setting("cache.size", "int", 10, "s", minimum=1)]
    with pytest.raises(ConfigError) as caught:
        resolve(declared, environ={"SIDECAR_CACHE_TTL_SECONDS": "9", "OLD_TTL": "10",
                                   "SIDECAR_CACHE_SIZE": "0"})
    assert len(caught.value.problems) == 2
    assert "SIDECAR_CACHE_TTL_SECONDS and OLD_TTL" in caught.value.problems[0]


def test_two_settings_may_not_claim_one_variable_even_as_an_alias() -> None:
    declared = [Setting("cache.ttl_seconds", "int", 60, "t"),
                Setting("store.ttl_seconds", "int", 60, "t",
                        deprecated_env=("SIDECAR_CACHE_TTL_SECONDS",))]
    with pytest.raises(ConfigError, match="both read SIDECAR_CACHE_TTL_SECONDS"):
        resolve(declared, environ={})


def test_a_misspelling_is_pointed_to_the_current_name() -> None:
    declared = all_declared_settings()
    environ = {"SIDECAR_ACCES_LOG": "true", "SIDECAR_LOG_ACCES": "true",
               "SIDECAR_ACCESS_LOG": "true", "SIDECAR_LOG_ACCESS": "true"}
    assert unknown_variables(environ, declared) == [
        "environment variable SIDECAR_ACCES_LOG: unknown setting "
        "(did you mean SIDECAR_LOG_ACCESS?)",
        "environment variable SIDECAR_LOG_ACCES: unknown setting "
        "(did you mean SIDECAR_LOG_ACCESS?)"]


def test_the_reference_names_the_deprecated_variables() -> None:
    table = settings_reference(all_declared_settings())
    row = next(line for line in table.splitlines() if line.startswith("| `log.access` |"))
    assert "`SIDECAR_LOG_ACCESS` (deprecated: `SIDECAR_ACCESS_LOG`)" in row
    row = next(line for line in table.splitlines() if line.startswith("| `db.host` |"))
    assert "| `DB_HOST` |" in row


def test_the_command_line_warns_once_per_deprecated_name() -> None:
    result = _cli("settings", env={"SIDECAR_PORT": "9123", "SIDECAR_ACCESS_LOG": "false"})
    assert result.returncode == 0, result.stderr
    assert "server.port = 9123" in result.stdout
    assert "log.access = False" in result.stdout
    assert sorted(_deprecation_lines(result.stderr)) == [
        "environment variable SIDECAR_ACCESS_LOG is deprecated: use SIDECAR_LOG_ACCESS",
        "environment variable SIDECAR_PORT is deprecated: use SIDECAR_SERVER_PORT"]


@pytest.mark.parametrize("command", ["check-config", "serve"])
def test_disagreeing_names_stop_start_up_with_one_line(command: str, tmp_path: Path) -> None:
    result = _cli(command, env={"MISTRAL_API_KEY": "k", "SIDECAR_PLUGINS_CHAIN": "logs,via",
                                "SIDECAR_SERVER_DATA_DIR": str(tmp_path),
                                "SIDECAR_LOG_ACCESS": "true", "SIDECAR_ACCESS_LOG": "false"})
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if "configuration error" in line]
    assert errors == [
        "mistral-sidecar: configuration error: log.access: environment variables "
        "SIDECAR_LOG_ACCESS and SIDECAR_ACCESS_LOG (deprecated) are set to different values; "
        "set only SIDECAR_LOG_ACCESS"]


def test_command_line_options_replace_a_deprecated_variable() -> None:
    # --port 0 must beat SIDECAR_PORT=9000 without a disagreement being reported: the check
    # that several workers need a fixed port then fails on the option's value.
    result = _cli("serve", "--port", "0", "--workers", "2",
                  env={"SIDECAR_PORT": "9000", "SIDECAR_PLUGINS_CHAIN": "via"})
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if "configuration error" in line]
    assert len(errors) == 1 and "need a fixed SIDECAR_SERVER_PORT, not 0" in errors[0]
