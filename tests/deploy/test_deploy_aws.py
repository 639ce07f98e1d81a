"""docker/aws: ECS Fargate task definitions valid for RegisterTaskDefinition, wired to AWS services.

The schema is AWS's published ECS API model as shipped in botocore (the data the AWS CLI
validates ``aws ecs register-task-definition --cli-input-json`` against, offline): botocore's
parameter validator checks required members, unknown keys, types and ranges; enum values are
checked here as well, since the validator leaves them to the service.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore.model import Shape
from botocore.validate import ParamValidator

from tests.deploy.deploy_helpers import (
    ecs_container_env,
    ecs_task_definitions,
    healthcheck_command,
    shutdown_seconds,
)

TASKS = ecs_task_definitions()
APP_TASK = next(task for path, task in TASKS if path.name == "task-definition.json")
# Whole secret, or ``secret-arn:json-key:version-stage:version-id`` for one JSON key of it.
SECRET_ARN = re.compile(
    r"^arn:aws:secretsmanager:[a-z0-9-]+:\d{12}:secret:[^:]+(:[^:]*:[^:]*:[^:]*)?$")


def _register_input() -> Shape:
    model = botocore.session.get_session().get_service_model("ecs")
    return model.operation_model("RegisterTaskDefinition").input_shape


def _enum_errors(value: Any, shape: Shape, where: str) -> list[str]:
    errors: list[str] = []
    if shape.type_name == "structure" and isinstance(value, dict):
        for key, item in value.items():
            if key in shape.members:
                errors += _enum_errors(item, shape.members[key], f"{where}.{key}")
    elif shape.type_name == "list" and isinstance(value, list):
        for index, item in enumerate(value):
            errors += _enum_errors(item, shape.member, f"{where}[{index}]")
    elif shape.type_name == "string" and shape.enum and value not in shape.enum:
        errors.append(f"{where}: {value!r} is not one of {shape.enum}")
    return errors


@pytest.mark.parametrize("task", TASKS, ids=lambda t: t[0].name)
def test_task_definitions_validate_against_the_ecs_api_model(
    task: tuple[Path, dict[str, Any]],
) -> None:
    _path, body = task
    shape = _register_input()
    report = ParamValidator().validate(body, shape)
    assert not report.has_errors(), report.generate_report()
    enum_errors = _enum_errors(body, shape, "task")
    assert not enum_errors, enum_errors


@pytest.mark.parametrize("task", TASKS, ids=lambda t: t[0].name)
def test_tasks_run_on_fargate_with_logs_in_cloudwatch(task: tuple[Path, dict[str, Any]]) -> None:
    _path, body = task
    assert body["requiresCompatibilities"] == ["FARGATE"] and body["networkMode"] == "awsvpc"
    for container in body["containerDefinitions"]:
        logs = container["logConfiguration"]
        assert logs["logDriver"] == "awslogs", container["name"]
        assert {"awslogs-group", "awslogs-region", "awslogs-stream-prefix"} <= set(logs["options"])
        for secret in container.get("secrets", []):
            assert SECRET_ARN.match(secret["valueFrom"]), secret["valueFrom"]


def _containers() -> tuple[dict[str, Any], dict[str, Any]]:
    by_image = {("sidecar" if "mistral-sidecar" in c["image"] else "app"): c
                for c in APP_TASK["containerDefinitions"]}
    return by_image["sidecar"], by_image["app"]


def test_app_starts_after_the_sidecar_is_healthy_and_reaches_it_on_localhost() -> None:
    sidecar, app = _containers()
    assert {"containerName": sidecar["name"], "condition": "HEALTHY"} in app["dependsOn"]
    port = sidecar["portMappings"][0]["containerPort"]
    assert ecs_container_env(app)["APP_MISTRAL_SERVER_URL"] == f"http://127.0.0.1:{port}"


def test_sidecar_health_check_is_the_images_healthcheck() -> None:
    sidecar, _app = _containers()
    assert sidecar["healthCheck"]["command"] == ["CMD", *healthcheck_command()]


def test_stop_timeout_covers_the_drain_and_the_final_flush() -> None:
    sidecar, _app = _containers()
    budget = shutdown_seconds(ecs_container_env(sidecar))
    assert budget + 5 <= sidecar["stopTimeout"] <= 120  # Fargate's maximum


def test_sidecar_points_at_rds_and_elasticache_with_secrets_from_secrets_manager() -> None:
    sidecar, _app = _containers()
    env = ecs_container_env(sidecar)
    assert str(env["DB_HOST"]).endswith(".rds.amazonaws.com")
    assert str(env["REDIS_HOST"]).endswith(".cache.amazonaws.com")
    assert env["MISTRAL_API_KEY"] is None and env["DB_PASSWORD"] is None
    assert env["SIDECAR_DB_MIGRATE_ON_START"] == "false"


def test_migration_task_uses_the_same_database() -> None:
    migrate = next(task for path, task in TASKS if path.name == "migrate-task-definition.json")
    (container,) = migrate["containerDefinitions"]
    assert container["command"] == ["migrate"]
    sidecar, _app = _containers()
    mine, theirs = ecs_container_env(container), ecs_container_env(sidecar)
    for name in ("DB_HOST", "DB_PORT", "DB_NAME", "DB_USER"):
        assert mine[name] == theirs[name], name
    password = {s["name"]: s["valueFrom"] for s in container["secrets"]}["DB_PASSWORD"]
    assert password == {s["name"]: s["valueFrom"] for s in sidecar["secrets"]}["DB_PASSWORD"]
