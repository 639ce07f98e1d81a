"""Authentication, unknown routes and validation errors, in Mistral's error shape."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp.test_utils import TestClient
from mistralai.client import Mistral, errors

from proxy.mock_upstream import MockConfig

from .conftest import AUTH
from .helpers import CHAT_BODY


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Basic mock-upstream-key"},
        {"Authorization": "Bearer "},
    ],
)
async def test_missing_or_wrong_key_is_401(http: TestClient, headers: dict[str, str]) -> None:
    response = await http.get("/v1/models", headers=headers)
    assert response.status == 401
    body = await response.json()
    assert body["object"] == "error"
    assert body["message"] == "Unauthorized"
    assert {"type", "code"} <= body.keys()


async def test_sdk_with_wrong_key_gets_401(base_url: str) -> None:
    client = Mistral(api_key="nope", server_url=base_url)
    with pytest.raises(errors.SDKError) as caught:
        await asyncio.to_thread(client.models.list)
    assert caught.value.status_code == 401


@pytest.mark.parametrize("mock_config", [MockConfig(api_keys=frozenset())])
async def test_empty_key_set_accepts_any_bearer(http: TestClient) -> None:
    assert (await http.get("/v1/models", headers={"Authorization": "Bearer x"})).status == 200
    assert (await http.get("/v1/models")).status == 401


async def test_unknown_api_path_is_404_in_mistral_shape(http: TestClient) -> None:
    response = await http.get("/v1/does/not/exist", headers=AUTH)
    assert response.status == 404
    body = await response.json()
    assert body["object"] == "error" and body["message"] == "Not Found"
    # Authentication comes first, as on the real API.
    assert (await http.get("/v1/does/not/exist")).status == 401


async def test_wrong_method_is_405(http: TestClient) -> None:
    response = await http.delete("/v1/chat/completions", headers=AUTH)
    assert response.status == 405
    assert (await response.json())["object"] == "error"


async def test_missing_required_field_is_422_with_detail(http: TestClient) -> None:
    response = await http.post(
        "/v1/chat/completions", json={"model": "mistral-small-latest"}, headers=AUTH
    )
    assert response.status == 422
    body = await response.json()
    assert body["object"] == "error" and body["type"] == "invalid_request_error"
    [detail] = body["message"]["detail"]
    assert detail["loc"] == ["body", "messages"] and detail["type"] == "missing"


async def test_malformed_json_and_bad_types_are_422(http: TestClient) -> None:
    broken = await http.post(
        "/v1/chat/completions",
        data=b"{not json",
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert broken.status == 422
    assert (await broken.json())["message"]["detail"][0]["type"] == "json_invalid"
    wrong = await http.post("/v1/embeddings", json={"model": 3, "input": "x"}, headers=AUTH)
    assert wrong.status == 422
    assert (await wrong.json())["message"]["detail"][0]["loc"] == ["body", "model"]
    bad_role = await http.post(
        "/v1/chat/completions",
        json={"model": "m", "messages": [{"role": "robot", "content": "x"}]},
        headers=AUTH,
    )
    assert bad_role.status == 422


async def test_api_answers_carry_correlation_headers(http: TestClient) -> None:
    response = await http.post("/v1/chat/completions", json=CHAT_BODY, headers=AUTH)
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.headers["mistral-correlation-id"]
    assert response.headers["x-envoy-upstream-service-time"].isdigit()
