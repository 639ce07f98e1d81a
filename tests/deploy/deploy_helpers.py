"""Reading the deployment files in docker/ and .github/, and the settings the sidecar reads.

Shared by the tests in this folder: parsing the Dockerfile, the compose file, Kubernetes,
ECS and Cloud Run manifests into the environment each container gets, and collecting every
declared setting (core plus all installed plugins, as ``mistral-sidecar settings`` does).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import yaml

from proxy.chain import ENTRY_POINT_GROUP, PluginChain
from proxy.settings import Setting, core_settings, resolve

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
DOCKERFILE = DOCKER / "Dockerfile"
DOCKERIGNORE = DOCKER / "Dockerfile.dockerignore"
COMPOSE = DOCKER / "compose.yaml"
K8S = DOCKER / "k8s"
AWS = DOCKER / "aws"
GCP = DOCKER / "gcp"
WORKFLOW = REPO / ".github" / "workflows" / "ci.yml"
README = REPO / "README.md"
#: The generated configuration reference.
CONFIGURATION = REPO / "docs" / "configuration.md"

SIDECAR = "sidecar"
"""Marker for a container that runs ``mistral-sidecar`` (its env must be sidecar settings)."""


# --- settings --------------------------------------------------------------------------------


@dataclass
class Declared:
    """Every setting declared by the core and the installed plugins."""

    settings: list[Setting]

    @property
    def env_names(self) -> set[str]:
        """Environment variables the sidecar reads."""
        return {s.env for s in self.settings if s.env}


@cache
def declared_settings() -> Declared:
    """Core settings plus each installed plugin's ``sidecar_settings`` (a plugin that does not
    import fails the caller)."""
    names = sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
    chain = PluginChain(names)
    declared = list(core_settings())
    for _name, extra in chain.call_all("sidecar_settings"):
        declared.extend(extra or ())
    return Declared(declared)


def resolved(env: dict[str, str | None]) -> dict[str, Any]:
    """Every setting's value for a container's environment (references left at defaults)."""
    given = {k: v for k, v in env.items() if v is not None}
    settings = resolve(declared_settings().settings, environ=given, strict=False)
    return {name: settings[name] for name in settings.declared}


def shutdown_seconds(env: dict[str, str | None]) -> float:
    """Longest a sidecar with this environment takes from SIGTERM to exit, before margins:
    the request drain, then the persistence plugin's final database flush (if in the chain)."""
    values = resolved(env)
    total = float(values["server.shutdown_grace_seconds"])
    if "persistence" in values["plugins.chain"]:
        total += float(values["persistence.shutdown_flush_seconds"])
    return total


# --- Dockerfile ------------------------------------------------------------------------------


@dataclass
class Instruction:
    """One Dockerfile instruction with continuation lines joined."""

    keyword: str
    args: str
    stage: int


def dockerfile_instructions(path: Path = DOCKERFILE) -> list[Instruction]:
    """Instructions in order; ``stage`` counts FROM lines (0 before the first)."""
    logical: list[str] = []
    buffer = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not buffer and (not line or line.startswith("#")):
            continue
        if buffer and line.startswith("#"):
            continue
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        logical.append(buffer + line)
        buffer = ""
    if buffer:
        logical.append(buffer)
    out: list[Instruction] = []
    stage = 0
    for text in logical:
        keyword, _, args = text.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        out.append(Instruction(keyword, args.strip(), stage))
    return out


def exec_form(args: str) -> list[str]:
    """The JSON array of an exec-form instruction; raises ValueError for shell form."""
    value = json.loads(args)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"not exec form: {args}")
    return value


def image_command(path: Path = DOCKERFILE) -> list[str]:
    """ENTRYPOINT followed by CMD of the final stage, as the container runtime would run."""
    entrypoint: list[str] = []
    cmd: list[str] = []
    final = max(i.stage for i in dockerfile_instructions(path))
    for inst in dockerfile_instructions(path):
        if inst.stage != final:
            continue
        if inst.keyword == "ENTRYPOINT":
            entrypoint = exec_form(inst.args)
            cmd = []
        elif inst.keyword == "CMD":
            cmd = exec_form(inst.args)
    return entrypoint + cmd


def healthcheck_command(path: Path = DOCKERFILE) -> list[str]:
    """The final stage's HEALTHCHECK command (exec form, after its options)."""
    final = max(i.stage for i in dockerfile_instructions(path))
    for inst in dockerfile_instructions(path):
        if inst.stage == final and inst.keyword == "HEALTHCHECK":
            _options, _, command = inst.args.partition("CMD ")
            return exec_form(command)
    raise AssertionError("no HEALTHCHECK in the final stage")


# --- compose ---------------------------------------------------------------------------------

_INTERPOLATION = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def interpolate(value: str) -> str:
    """Compose ``${VAR:-default}`` with nothing set in the environment: the default."""
    return _INTERPOLATION.sub(lambda m: m.group(2) or "", value)


def load_compose() -> dict[str, Any]:
    """The compose file as data."""
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def compose_env(service: dict[str, Any]) -> dict[str, str]:
    """A compose service's environment (list or mapping form), interpolated with defaults."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): interpolate(str(v)) for k, v in env.items()}


def compose_runs_sidecar(service: dict[str, Any]) -> bool:
    """True for a service running the sidecar image's default command (``serve``)."""
    if "build" not in service and not str(service.get("image", "")).startswith("mistral-sidecar"):
        return False
    command = service.get("command")
    return command is None or (isinstance(command, list) and command[:1] == ["serve"])


# --- Kubernetes ------------------------------------------------------------------------------


def k8s_documents() -> list[tuple[Path, dict[str, Any]]]:
    """Every YAML document under docker/k8s/."""
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((path, doc))
    return docs


def k8s_find(kind: str, name: str | None = None) -> list[dict[str, Any]]:
    """Kubernetes objects of ``kind`` (and ``name``)."""
    return [doc for _p, doc in k8s_documents()
            if doc.get("kind") == kind and (name is None or doc["metadata"]["name"] == name)]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    """The pod spec of a Deployment or Job."""
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def k8s_containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Init and app containers of a pod spec."""
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def k8s_container_env(container: dict[str, Any]) -> dict[str, str | None]:
    """Environment of a container: envFrom ConfigMaps/Secrets of docker/k8s plus ``env``.

    Values from Secrets (and ``valueFrom`` references) are ``None``: they are set at deploy
    time, not in the files.
    """
    env: dict[str, str | None] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            (cm,) = k8s_find("ConfigMap", source["configMapRef"]["name"])
            env.update({k: str(v) for k, v in cm.get("data", {}).items()})
        elif "secretRef" in source:
            (secret,) = k8s_find("Secret", source["secretRef"]["name"])
            keys = {**secret.get("stringData", {}), **secret.get("data", {})}
            env.update({k: None for k in keys})
    for item in container.get("env", []):
        env[item["name"]] = str(item["value"]) if "value" in item else None
    return env


# --- ECS -------------------------------------------------------------------------------------


def ecs_task_definitions() -> list[tuple[Path, dict[str, Any]]]:
    """Every task definition JSON under docker/aws/."""
    return [(p, json.loads(p.read_text())) for p in sorted(AWS.glob("*.json"))]


def ecs_container_env(container: dict[str, Any]) -> dict[str, str | None]:
    """``environment`` values plus ``secrets`` names (values ``None``)."""
    env: dict[str, str | None] = {e["name"]: e["value"] for e in container.get("environment", [])}
    env.update({s["name"]: None for s in container.get("secrets", [])})
    return env


# --- Cloud Run -------------------------------------------------------------------------------


def cloud_run_documents() -> list[tuple[Path, dict[str, Any]]]:
    """Every YAML document under docker/gcp/."""
    return [(p, yaml.safe_load(p.read_text())) for p in sorted(GCP.glob("*.yaml"))]


def cloud_run_containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Containers of a Cloud Run Service or Job."""
    if doc["kind"] == "Service":
        return list(doc["spec"]["template"]["spec"]["containers"])
    return list(doc["spec"]["template"]["spec"]["template"]["spec"]["containers"])


def cloud_run_container_env(container: dict[str, Any]) -> dict[str, str | None]:
    """``env`` values; Secret Manager references are ``None``."""
    return {e["name"]: (str(e["value"]) if "value" in e else None)
            for e in container.get("env", [])}


# --- everything together ---------------------------------------------------------------------

# Containers that are not the sidecar, and the variables their own programs read.
OTHER_PROGRAMS: dict[str, tuple[str, ...]] = {
    "postgres": ("POSTGRES_",),  # the postgres image's initialisation
    "grafana": ("GF_",),  # Grafana's configuration overrides
    "app": ("APP_",),  # the example app of the sidecar pattern
}


@dataclass
class ContainerEnv:
    """The environment one container gets from one deployment file."""

    file: Path
    container: str
    runs: str
    env: dict[str, str | None]

    def label(self) -> str:
        """``file:container`` for messages."""
        return f"{self.file.relative_to(REPO)}:{self.container}"


def all_container_envs() -> Iterator[ContainerEnv]:
    """Every container in every deployment file, with what it runs.

    ``runs`` is :data:`SIDECAR` for containers running the sidecar image (``serve`` or
    ``migrate``, both read the sidecar's settings), the key of :data:`OTHER_PROGRAMS` for
    known other programs, and ``"mock-upstream"`` for the mock (configured by arguments).
    """
    for name, service in load_compose()["services"].items():
        env: dict[str, str | None] = dict(compose_env(service))
        if compose_runs_sidecar(service):
            runs = SIDECAR
        elif "build" in service:
            runs = "mock-upstream"
        else:
            runs = str(service["image"]).split(":")[0].rsplit("/", 1)[-1]
        yield ContainerEnv(COMPOSE, name, runs, env)
    for path, doc in k8s_documents():
        if doc["kind"] in ("Deployment", "Job"):
            for container in k8s_containers(pod_spec(doc)):
                runs = SIDECAR if "mistral-sidecar" in container["image"] else container["name"]
                yield ContainerEnv(path, container["name"], runs, k8s_container_env(container))
    for path, task in ecs_task_definitions():
        for container in task["containerDefinitions"]:
            runs = SIDECAR if "mistral-sidecar" in container["image"] else container["name"]
            yield ContainerEnv(path, container["name"], runs, ecs_container_env(container))
    for path, doc in cloud_run_documents():
        for container in cloud_run_containers(doc):
            runs = SIDECAR if "mistral-sidecar" in container["image"] else container["name"]
            yield ContainerEnv(path, container["name"], runs, cloud_run_container_env(container))
