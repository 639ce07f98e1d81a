"""docker/gcp: a Cloud Run service (app + mistral-sidecar sidecar) and a migration job.

The schema is Google's published Cloud Run Admin API v1 discovery document, as shipped offline
in google-api-python-client. Its schemas are turned into JSON Schema here: unknown fields are
rejected, fields documented "Required." are required (except ``metadata.namespace``, which
``gcloud run services replace`` fills with the project), and fields documented "Not supported
by Cloud Run" are forbidden. Cloud Run-specific annotations are checked against the list of
accepted annotations and resource types in the same document.
"""

from __future__ import annotations

import importlib.util
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.deploy.deploy_helpers import (
    cloud_run_container_env,
    cloud_run_containers,
    cloud_run_documents,
    healthcheck_command,
    resolved,
    shutdown_seconds,
)

DOCUMENTS = cloud_run_documents()
SERVICE = next(doc for _p, doc in DOCUMENTS if doc["kind"] == "Service")
JOB = next(doc for _p, doc in DOCUMENTS if doc["kind"] == "Job")
KINDS = {"Service": "serving.knative.dev/v1", "Job": "run.googleapis.com/v1"}
NOT_REQUIRED_IN_FILES = {("ObjectMeta", "namespace")}
CLOUD_RUN_SHUTDOWN_SECONDS = 10  # SIGTERM to SIGKILL on Cloud Run


@cache
def _discovery() -> dict[str, Any]:
    spec = importlib.util.find_spec("googleapiclient")
    assert spec and spec.submodule_search_locations, "pip install google-api-python-client"
    folder = Path(next(iter(spec.submodule_search_locations)))
    data: dict[str, Any] = json.loads(
        (folder / "discovery_cache" / "documents" / "run.v1.json").read_text())
    return data


def _convert(node: dict[str, Any], owner: str = "") -> dict[str, Any]:
    if "$ref" in node:
        return {"$ref": f"#/$defs/{node['$ref']}"}
    kind = node.get("type")
    if kind == "object":
        out: dict[str, Any] = {"type": "object"}
        properties = node.get("properties")
        if properties:
            out["properties"] = {}
            required = []
            for name, prop in properties.items():
                text = prop.get("description", "")
                if text.startswith("Not supported"):
                    out["properties"][name] = False
                    continue
                out["properties"][name] = _convert(prop)
                if text.startswith("Required") and (owner, name) not in NOT_REQUIRED_IN_FILES:
                    required.append(name)
            out["additionalProperties"] = False
            if required:
                out["required"] = required
        if isinstance(node.get("additionalProperties"), dict):
            out["additionalProperties"] = _convert(node["additionalProperties"])
        return out
    if kind == "array":
        return {"type": "array", "items": _convert(node["items"])}
    if kind == "string" and node.get("format") == "int64":
        return {"type": ["string", "integer"]}  # proto3 JSON accepts both
    if kind in ("string", "integer", "boolean", "number"):
        return {"type": kind}
    return {}


@cache
def _schema(root: str) -> dict[str, Any]:
    schemas = _discovery()["schemas"]
    return {"$defs": {name: _convert(body, name) for name, body in schemas.items()},
            "$ref": f"#/$defs/{root}"}


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda d: d[0].name)
def test_manifests_validate_against_the_cloud_run_api_schema(
    document: tuple[Path, dict[str, Any]],
) -> None:
    _path, doc = document
    assert doc["apiVersion"] == KINDS[doc["kind"]]
    validator = jsonschema.Draft202012Validator(_schema(doc["kind"]))
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
              for e in validator.iter_errors(doc)]
    assert not errors, "\n".join(errors)


def _accepted_annotations() -> dict[str, set[str]]:
    """Annotation -> resource types, from ObjectMeta.annotations' documentation."""
    text = _discovery()["schemas"]["ObjectMeta"]["properties"]["annotations"]["description"]
    accepted: dict[str, set[str]] = {}
    for name, kinds in re.findall(r"\* `([^`]+)`: ([^*]+)", text):
        accepted[name] = {k.strip(" .") for k in kinds.split(",") if k.strip(" .")}
    assert "run.googleapis.com/network-interfaces" in accepted
    return accepted


def _annotation_sites() -> list[tuple[str, dict[str, str]]]:
    return [
        ("Service", SERVICE["metadata"].get("annotations", {})),
        ("Revision", SERVICE["spec"]["template"]["metadata"].get("annotations", {})),
        ("Job", JOB["metadata"].get("annotations", {})),
        ("Execution", JOB["spec"]["template"]["metadata"].get("annotations", {})),
    ]


def test_cloud_run_annotations_are_accepted_where_they_are_used() -> None:
    accepted = _accepted_annotations()
    for resource, used in _annotation_sites():
        for name in used:
            if name.startswith(("run.googleapis.com/", "autoscaling.knative.dev/")):
                kinds = accepted.get(name, set())
                assert resource in kinds or "All resources" in kinds, (
                    f"{name} is not accepted on a {resource} (accepted on: {kinds or 'none'})")


def _by_role() -> tuple[dict[str, Any], dict[str, Any]]:
    containers = cloud_run_containers(SERVICE)
    sidecar = next(c for c in containers if "mistral-sidecar" in c["image"])
    app = next(c for c in containers if c is not sidecar)
    return sidecar, app


def test_app_is_the_ingress_container_and_starts_after_the_sidecar() -> None:
    sidecar, app = _by_role()
    assert app.get("ports") and not sidecar.get("ports"), "only the app receives requests"
    annotations = SERVICE["spec"]["template"]["metadata"]["annotations"]
    dependencies = json.loads(annotations["run.googleapis.com/container-dependencies"])
    assert dependencies == {app["name"]: [sidecar["name"]]}
    port = cloud_run_container_env(sidecar)["SIDECAR_SERVER_PORT"]
    assert cloud_run_container_env(app)["APP_MISTRAL_SERVER_URL"] == f"http://127.0.0.1:{port}"


def test_sidecar_probes_healthz_on_its_port() -> None:
    sidecar, _app = _by_role()
    port = int(str(cloud_run_container_env(sidecar)["SIDECAR_SERVER_PORT"]))
    for probe in ("startupProbe", "livenessProbe"):
        assert sidecar[probe]["httpGet"] == {"path": "/healthz", "port": port}
    assert "/healthz" in healthcheck_command()[-1]


def test_drain_and_final_flush_fit_cloud_runs_shutdown_window() -> None:
    sidecar, _app = _by_role()
    assert shutdown_seconds(cloud_run_container_env(sidecar)) <= CLOUD_RUN_SHUTDOWN_SECONDS - 1


def test_cloud_sql_and_memorystore_over_the_vpc_with_secrets_from_secret_manager() -> None:
    sidecar, _app = _by_role()
    env = cloud_run_container_env(sidecar)
    annotations = SERVICE["spec"]["template"]["metadata"]["annotations"]
    assert "run.googleapis.com/network-interfaces" in annotations
    assert annotations["run.googleapis.com/vpc-access-egress"] == "private-ranges-only"
    assert env["DB_HOST"] and env["REDIS_HOST"]
    for name in ("MISTRAL_API_KEY", "DB_PASSWORD", "REDIS_PASSWORD"):
        refs = [e for e in sidecar["env"] if e["name"] == name]
        assert refs and refs[0]["valueFrom"]["secretKeyRef"]["key"] == "latest", name


def test_migration_job_uses_the_services_database() -> None:
    (container,) = cloud_run_containers(JOB)
    assert container["args"] == ["migrate"]
    sidecar, _app = _by_role()
    mine, theirs = cloud_run_container_env(container), cloud_run_container_env(sidecar)
    for name in ("DB_HOST", "DB_PORT", "DB_NAME", "DB_USER"):
        assert mine[name] == theirs[name], name


def test_in_memory_spool_stays_under_the_volume_limit() -> None:
    sidecar, _app = _by_role()
    env = cloud_run_container_env(sidecar)
    (mount,) = [m for m in sidecar["volumeMounts"]
                if m["mountPath"] == env["SIDECAR_SERVER_DATA_DIR"]]
    (volume,) = [v for v in SERVICE["spec"]["template"]["spec"]["volumes"]
                 if v["name"] == mount["name"]]
    limit = volume["emptyDir"]["sizeLimit"]
    assert limit.endswith("Mi")
    assert resolved(env)["persistence.spool_max_bytes"] <= int(limit[:-2]) * 1024**2 * 0.75
