"""Every environment variable a deployment file sets is one its program reads, with a valid value.

A typo (``DB_HOSTNAME``) or a variable the sidecar never reads would otherwise be silently
ignored in production. Variables set for other containers must belong to their programs.
"""

from __future__ import annotations

import pytest

from proxy.chain import PluginChain
from proxy.settings import ConfigError, resolve
from tests.deploy.deploy_helpers import (
    OTHER_PROGRAMS,
    SIDECAR,
    ContainerEnv,
    all_container_envs,
    declared_settings,
    resolved,
)

CONTAINERS = list(all_container_envs())


def test_every_deployment_target_is_covered() -> None:
    files = {c.file.parent.name for c in CONTAINERS if c.runs == SIDECAR}
    assert files == {"docker", "k8s", "aws", "gcp"}


@pytest.mark.parametrize("container", [c for c in CONTAINERS if c.runs == SIDECAR],
                         ids=ContainerEnv.label)
def test_sidecar_containers_set_only_variables_the_sidecar_reads(
    container: ContainerEnv,
) -> None:
    declared = declared_settings()
    unknown = sorted(set(container.env) - declared.env_names)
    assert not unknown, (
        f"{container.label()} sets variables the sidecar does not read: {', '.join(unknown)} "
        "(see `mistral-sidecar settings`)")


@pytest.mark.parametrize("container", [c for c in CONTAINERS if c.runs == SIDECAR],
                         ids=ContainerEnv.label)
def test_sidecar_values_in_the_files_are_valid_settings(container: ContainerEnv) -> None:
    declared = declared_settings()
    given = {k: v for k, v in container.env.items() if v is not None}
    try:
        resolve(declared.settings, environ=given, strict=False)
    except ConfigError as error:
        pytest.fail(f"{container.label()}: " + "; ".join(error.problems))


@pytest.mark.parametrize("container", [c for c in CONTAINERS if c.runs == SIDECAR],
                         ids=ContainerEnv.label)
def test_plugin_chain_names_installed_plugins(container: ContainerEnv) -> None:
    chain = resolved(container.env)["plugins.chain"]
    try:
        PluginChain(list(chain))
    except ConfigError as error:
        pytest.fail(f"{container.label()}: " + "; ".join(error.problems))


def test_every_serving_sidecar_runs_the_same_chain() -> None:
    """Compose, Kubernetes, ECS and Cloud Run differ in plumbing, not in what the sidecar does."""
    chains = {c.label(): tuple(resolved(c.env)["plugins.chain"])
              for c in CONTAINERS if c.runs == SIDECAR and "migrate" not in c.container}
    assert len(set(chains.values())) == 1, chains
    assert {"auth", "ratelimit", "persistence"} <= set(next(iter(chains.values())))


@pytest.mark.parametrize("container", [c for c in CONTAINERS if c.runs != SIDECAR],
                         ids=ContainerEnv.label)
def test_other_containers_set_only_their_own_programs_variables(
    container: ContainerEnv,
) -> None:
    prefixes = OTHER_PROGRAMS.get(container.runs, ())
    stray = sorted(name for name in container.env if not name.startswith(prefixes))
    assert not stray, f"{container.label()} ({container.runs}) sets {', '.join(stray)}"


def test_secrets_are_references_outside_compose() -> None:
    """Keys and passwords come from Secret/Secrets Manager/Secret Manager, never inline."""
    secret_names = {"MISTRAL_API_KEY", "DB_PASSWORD", "REDIS_PASSWORD", "APP_MISTRAL_API_KEY"}
    for container in CONTAINERS:
        if container.file.parent.name == "docker":
            continue  # the local compose stack uses throwaway development values
        inline = sorted(n for n in secret_names & set(container.env)
                        if container.env[n] is not None)
        assert not inline, f"{container.label()} inlines {', '.join(inline)}"
