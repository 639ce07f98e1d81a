""".github/workflows/ci.yml: valid workflow; tests against real services; deploy behind a gate."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import yaml

from tests.deploy.deploy_helpers import AWS, DOCKER, REPO, WORKFLOW

# PyYAML reads the bare key `on` as the boolean True (YAML 1.1).
RAW: dict[Any, Any] = yaml.safe_load(WORKFLOW.read_text())
TRIGGERS: dict[str, Any] = RAW["on"] if "on" in RAW else RAW[True]
JOBS: dict[str, Any] = RAW["jobs"]


def _runs(job: str) -> str:
    return "\n".join(step.get("run", "") for step in JOBS[job]["steps"])


def _uses(job: str) -> list[dict[str, Any]]:
    return [step for step in JOBS[job]["steps"] if "uses" in step]


def test_workflow_matches_the_github_workflow_schema() -> None:
    # check-jsonschema vendors SchemaStore's github-workflow schema: no network needed.
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema",
         "vendor.github-workflows", str(WORKFLOW)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_tests_run_with_coverage_against_postgres_and_redis_service_containers() -> None:
    test = JOBS["test"]
    images = {name: spec["image"].split(":")[0] for name, spec in test["services"].items()}
    assert images == {"postgres": "postgres", "redis": "redis"}
    assert test["services"]["postgres"]["env"]["POSTGRES_DB"] == "test"  # tests/conftest.py
    assert "pytest" in _runs("test") and "--cov" in _runs("test")


def test_lint_runs_ruff_and_mypy() -> None:
    runs = _runs("lint")
    assert "ruff check" in runs and "mypy" in runs


def test_image_is_built_from_the_dockerfile_after_lint_and_tests() -> None:
    image = JOBS["image"]
    assert set(image["needs"]) == {"lint", "test"}
    build = next(s for s in _uses("image") if s["uses"].startswith("docker/build-push-action"))
    assert (REPO / build["with"]["context"] / build["with"]["file"]).resolve() == (
        DOCKER / "Dockerfile").resolve()


def test_deploy_waits_for_a_manual_run_and_an_approved_environment() -> None:
    deploy = JOBS["deploy"]
    assert "workflow_dispatch" in TRIGGERS
    assert "github.event_name == 'workflow_dispatch'" in deploy["if"]
    assert deploy["environment"]["name"] == "production"
    assert "image" in ([deploy["needs"]] if isinstance(deploy["needs"], str) else deploy["needs"])
    for event in ("push", "pull_request"):
        assert event in TRIGGERS, f"CI also runs on {event}"


def test_deploy_renders_the_task_definitions_in_docker_aws() -> None:
    renders = [s["with"] for s in _uses("deploy")
               if s["uses"].startswith("aws-actions/amazon-ecs-render-task-definition")]
    assert renders
    for step in renders:
        task = json.loads((REPO / step["task-definition"]).read_text())
        assert (REPO / step["task-definition"]).parent == AWS
        names = [c["name"] for c in task["containerDefinitions"]]
        assert step["container-name"] in names
