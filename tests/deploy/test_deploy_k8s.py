"""docker/k8s: valid Kubernetes objects (strict schemas), and a sidecar pod that drains properly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from tests.deploy.deploy_helpers import (
    k8s_container_env,
    k8s_documents,
    k8s_find,
    pod_spec,
    resolved,
    shutdown_seconds,
)

# 1.29: the first release with native sidecar containers on by default; and the newest bundled.
VERSIONS = ["1.29.0", kubernetes_validate.latest_version()]

DEPLOYMENT = k8s_find("Deployment")[0]
POD = pod_spec(DEPLOYMENT)


def _sidecar() -> dict[str, Any]:
    found = [c for c in [*POD.get("initContainers", []), *POD["containers"]]
             if "mistral-sidecar" in c["image"]]
    assert len(found) == 1
    return found[0]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("document", k8s_documents(),
                         ids=lambda d: f"{d[0].name}:{d[1]['kind']}/{d[1]['metadata']['name']}")
def test_objects_validate_against_the_kubernetes_schema(
    document: tuple[Path, dict[str, Any]], version: str
) -> None:
    _path, doc = document
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        where = ".".join(str(p) for p in error.path)
        pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} at {where}: {error.message}")


def test_the_kit_has_every_piece() -> None:
    kinds = {doc["kind"] for _p, doc in k8s_documents()}
    assert kinds >= {"Deployment", "ConfigMap", "Secret", "PodDisruptionBudget", "Service"}


def test_sidecar_runs_beside_the_app_and_outlives_it() -> None:
    sidecar = _sidecar()
    # A native sidecar: started before the app, stopped after it.
    assert sidecar in POD.get("initContainers", [])
    assert sidecar["restartPolicy"] == "Always"
    apps = [c for c in POD["containers"] if c is not sidecar]
    assert apps, "an app container shares the pod"
    port = sidecar["ports"][0]["containerPort"]
    app_env = k8s_container_env(apps[0])
    assert f"127.0.0.1:{port}" in str(app_env.get("APP_MISTRAL_SERVER_URL"))


def test_probes_use_healthz_and_readyz_on_the_sidecar_port() -> None:
    sidecar = _sidecar()
    names = {p["name"]: p["containerPort"] for p in sidecar["ports"]}
    env = k8s_container_env(sidecar)
    assert str(names[sidecar["livenessProbe"]["httpGet"]["port"]]) == env["SIDECAR_SERVER_PORT"]
    assert sidecar["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert sidecar["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert sidecar["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_resources_are_requested_and_limited() -> None:
    for container in [*POD.get("initContainers", []), *POD["containers"]]:
        resources = container["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"]), container["name"]
        assert "memory" in resources["limits"], container["name"]


def test_termination_grace_covers_the_drain_and_final_flush_plus_a_margin() -> None:
    budget = shutdown_seconds(k8s_container_env(_sidecar()))
    margin = POD["terminationGracePeriodSeconds"] - budget
    assert 5 <= margin <= 30, f"terminationGracePeriodSeconds leaves {margin}s over the drain"


def test_prometheus_scrapes_the_sidecar_metrics() -> None:
    annotations = DEPLOYMENT["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    ports = [str(p["containerPort"]) for p in _sidecar()["ports"]]
    assert annotations["prometheus.io/port"] in ports


def test_disruption_budget_and_service_select_the_pods() -> None:
    labels = DEPLOYMENT["spec"]["template"]["metadata"]["labels"]
    (pdb,) = k8s_find("PodDisruptionBudget")
    selector = pdb["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items()
    assert DEPLOYMENT["spec"]["replicas"] > pdb["spec"]["minAvailable"]
    for service in k8s_find("Service"):
        assert service["spec"]["selector"].items() <= labels.items()


def test_keys_and_passwords_come_from_the_secret() -> None:
    env = k8s_container_env(_sidecar())
    for name in ("MISTRAL_API_KEY", "DB_PASSWORD"):
        assert name in env and env[name] is None, f"{name} must come from a Secret"


def test_replicas_do_not_race_on_migrations() -> None:
    env = k8s_container_env(_sidecar())
    assert env["SIDECAR_DB_MIGRATE_ON_START"] == "false"
    (job,) = k8s_find("Job")
    (container,) = pod_spec(job)["containers"]
    assert container["args"] == ["migrate"]
    assert k8s_container_env(container).keys() >= {"DB_HOST", "DB_PASSWORD"}


def _bytes(quantity: str) -> int:
    units = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "K": 1000, "M": 1000**2, "G": 1000**3}
    for suffix in ("Ki", "Mi", "Gi", "K", "M", "G"):
        if quantity.endswith(suffix):
            return int(quantity[: -len(suffix)]) * units[suffix]
    return int(quantity)


def test_full_spool_stays_under_the_data_volume_limit() -> None:
    """An emptyDir past its sizeLimit gets the pod evicted; the spool-full policy must act first."""
    sidecar = _sidecar()
    data_dir = str(k8s_container_env(sidecar)["SIDECAR_SERVER_DATA_DIR"])
    (mount,) = [m for m in sidecar["volumeMounts"] if m["mountPath"] == data_dir]
    (volume,) = [v for v in POD["volumes"] if v["name"] == mount["name"]]
    spool = resolved(k8s_container_env(sidecar))["persistence.spool_max_bytes"]
    assert spool <= _bytes(volume["emptyDir"]["sizeLimit"]) * 0.75
