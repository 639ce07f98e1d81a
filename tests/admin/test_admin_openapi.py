"""``/admin/v1/openapi.json`` is a valid OpenAPI 3.1 document that describes exactly the
routes the sidecar serves under ``/admin/v1/``: none missing, none invented."""

from __future__ import annotations

from pathlib import Path

from admin_support import admin_env, assert_error, call, create_key
from openapi_spec_validator import validate

from tests.conftest import SidecarFactory


async def test_the_document_is_valid_and_matches_the_routes_served(
    start_sidecar: SidecarFactory, tmp_path: Path
) -> None:
    sidecar = await start_sidecar(**admin_env({}, tmp_path / "sidecar.log"))
    admin = await create_key(sidecar.env, "root", "admin", "acme")
    reply = await call(sidecar.url, "GET", "/admin/v1/openapi.json", admin.key)
    assert reply.status == 200, reply.text
    doc = reply.body
    validate(doc)
    assert doc["openapi"].startswith("3.1")

    described = {(method.upper(), path) for path, item in doc["paths"].items()
                 for method in item}
    served = set()
    for route in sidecar.app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if path.startswith("/admin/v1/") and route.method != "*":
            served.add((route.method, path))
    assert described == served
    assert len(served) >= 15

    for path, item in doc["paths"].items():
        for method, operation in item.items():
            where = f"{method.upper()} {path}"
            assert operation["summary"] and operation["operationId"], where
            for status in ("401", "403"):
                assert operation["responses"][status]["content"]["application/json"][
                    "schema"] == {"$ref": "#/components/schemas/Error"}, where
            declared = {p["name"] for p in operation["parameters"] if p["in"] == "path"}
            assert declared == {part[1:-1] for part in path.split("/")
                                if part.startswith("{")}, where
    keys = doc["paths"]["/admin/v1/keys"]
    assert keys["post"]["responses"]["201"]["content"]["application/json"]["schema"] == \
        {"$ref": "#/components/schemas/NewKey"}
    assert "secret" not in doc["components"]["schemas"]["Key"]["properties"]


async def test_the_document_is_for_admins_only(
    start_sidecar: SidecarFactory, tmp_path: Path
) -> None:
    sidecar = await start_sidecar(**admin_env({}, tmp_path / "sidecar.log"))
    user = await create_key(sidecar.env, "alice", "user", "acme")
    assert_error(await call(sidecar.url, "GET", "/admin/v1/openapi.json", user.key), 403)
    assert_error(await call(sidecar.url, "GET", "/admin/v1/openapi.json"), 401)
