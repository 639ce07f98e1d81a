"""docker/compose.yaml: valid against the Compose Specification, and a complete working stack."""

from __future__ import annotations

import subprocess
import sys
from urllib.parse import urlsplit

from tests.deploy.deploy_helpers import COMPOSE, DOCKER, compose_env, load_compose

SERVICES = load_compose()["services"]


def test_compose_file_matches_the_compose_spec_schema() -> None:
    # check-jsonschema vendors the compose-spec schema: no network needed.
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
         str(COMPOSE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_stack_has_every_service_of_the_guide() -> None:
    assert set(SERVICES) >= {"sidecar", "mock-upstream", "postgres", "redis", "prometheus",
                             "grafana", "toxiproxy"}
    assert SERVICES["toxiproxy"]["image"].startswith("ghcr.io/shopify/toxiproxy:")


def test_sidecar_is_built_from_the_dockerfile_and_wired_to_its_dependencies() -> None:
    sidecar = SERVICES["sidecar"]
    build = sidecar["build"]
    assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == (
        DOCKER / "Dockerfile").resolve()
    env = compose_env(sidecar)
    assert env["SIDECAR_SERVER_HOST"] == "0.0.0.0"
    assert env["DB_HOST"] == "postgres" and env["REDIS_HOST"] == "redis"
    assert urlsplit(env["MISTRAL_BASE_URL"]).hostname == "mock-upstream"
    assert sidecar["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert sidecar["depends_on"]["redis"]["condition"] == "service_healthy"
    # State survives container re-creation: the data dir is a named volume.
    assert any(v.endswith(":" + env["SIDECAR_SERVER_DATA_DIR"]) for v in sidecar["volumes"])
    # The database the sidecar uses is the one the postgres container creates.
    pg = compose_env(SERVICES["postgres"])
    assert (env["DB_NAME"], env["DB_USER"], env["DB_PASSWORD"]) == (
        pg["POSTGRES_DB"], pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"])


def test_mock_upstream_runs_from_the_same_image_and_accepts_the_sidecars_key() -> None:
    mock = SERVICES["mock-upstream"]
    assert mock["image"] == SERVICES["sidecar"]["image"]
    command = mock["command"]
    assert command[0] == "mock-upstream"
    assert command[command.index("--api-key") + 1] == compose_env(
        SERVICES["sidecar"])["MISTRAL_API_KEY"]
    assert str(urlsplit(compose_env(SERVICES["sidecar"])["MISTRAL_BASE_URL"]).port) == (
        command[command.index("--port") + 1])


def test_monitoring_config_is_mounted_from_docker_prometheus_and_grafana() -> None:
    prometheus = [v.split(":")[0] for v in SERVICES["prometheus"]["volumes"]]
    assert "./prometheus/prometheus.yml" in prometheus
    assert "./prometheus/alerts.yml" in prometheus
    grafana = [v.split(":")[0] for v in SERVICES["grafana"]["volumes"]]
    assert any(v.startswith("./grafana/") for v in grafana)


def test_toxiproxy_is_reachable_where_the_fault_tests_look() -> None:
    """Host networking: TOXIPROXY_URL=http://127.0.0.1:8474 and proxies on the host loopback."""
    toxiproxy = SERVICES["toxiproxy"]
    assert toxiproxy["network_mode"] == "host"
    assert "-port=8474" in toxiproxy["command"]
