"""The request body is parsed once, by the core: every plugin reads that parse, validation
reports what it found, and repeated keys are looked for only when they are refused."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from proxy import jsoncodec
from tests.conftest import MockUpstream, SidecarFactory
from tests.core.calling_plugins import after, before

AROUND_VALIDATE = ("tests.core.calling_plugins:before,validate,"
                   "tests.core.calling_plugins:after")
REPEATED = (b'{"model": "m", "messages": [{"role": "user", "content": "hi"}],'
            b' "messages": [{"role": "user", "content": "bye"}]}')


async def _post(url: str, raw: bytes) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.post(
        url + "/v1/chat/completions", data=raw, headers={"Content-Type": "application/json"}
    ) as resp:
        return resp.status, await resp.json(content_type=None)


@pytest.fixture(autouse=True)
def _forget() -> None:
    before.seen.clear()
    after.seen.clear()


@pytest.mark.parametrize("stream", [False, True])
async def test_plugins_before_and_after_validation_read_the_same_parse(
    start_sidecar: SidecarFactory, stream: bool
) -> None:
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN=AROUND_VALIDATE)
    sent = {"model": "mistral-small-latest", "messages": [{"role": "user", "content": "hi"}],
            "stream": stream}
    async with aiohttp.ClientSession() as http, http.post(
        sidecar.url + "/v1/chat/completions", json=sent
    ) as resp:
        assert resp.status == 200
        await resp.read()
    ((seen_before, error_before),) = before.seen
    ((seen_after, error_after),) = after.seen
    assert seen_before == sent and error_before is None and error_after is None
    assert seen_after is seen_before


@pytest.mark.parametrize("stream", [b"", b', "stream": true'])
async def test_repeated_keys_are_refused_and_earlier_plugins_still_read_the_last_value(
    start_sidecar: SidecarFactory, mock_upstream: MockUpstream, stream: bytes
) -> None:
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN=AROUND_VALIDATE)
    status, body = await _post(sidecar.url, REPEATED[:-1] + stream + b"}")
    assert status == 400 and body["code"] == "invalid_json"
    assert body["message"] == "The JSON body has an object that repeats a key."
    ((seen, error),) = before.seen
    assert seen["messages"] == [{"role": "user", "content": "bye"}]
    assert isinstance(error, jsoncodec.DuplicateKeyError)
    assert after.seen == []
    assert await mock_upstream.requests() == []


async def test_repeated_keys_allowed_are_not_an_error(start_sidecar: SidecarFactory) -> None:
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN=AROUND_VALIDATE,
                                  SIDECAR_VALIDATE_REJECT_DUPLICATE_KEYS="false")
    status, _ = await _post(sidecar.url, REPEATED)
    assert status == 200
    ((seen, error),) = after.seen
    assert seen["messages"] == [{"role": "user", "content": "bye"}] and error is None


async def test_garbage_is_reported_with_where_the_parse_stopped(
    start_sidecar: SidecarFactory,
) -> None:
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN=AROUND_VALIDATE)
    status, body = await _post(sidecar.url, b'{"model": "m",\n "messages": [}')
    assert status == 400 and body["code"] == "invalid_json"
    assert body["message"].startswith("The request body is not valid JSON: ")
    assert body["message"].endswith(" at line 2 column 15.")
    ((seen, error),) = before.seen
    assert seen is None and isinstance(error, json.JSONDecodeError)


async def test_a_literal_null_is_json_and_no_error(start_sidecar: SidecarFactory) -> None:
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN=AROUND_VALIDATE)
    status, _ = await _post(sidecar.url, b"null")
    assert status == 422  # upstream's own answer: valid JSON, wrong shape
    assert after.seen == [(None, None)]


def test_unique_keys_are_checked_at_every_depth_and_only_when_asked() -> None:
    nested = b'{"a": [{"k": 1, "k": 2}], "b": {"c": true}}'
    with pytest.raises(jsoncodec.DuplicateKeyError) as caught:
        jsoncodec.loads(nested, unique_keys=True)
    assert caught.value.value == {"a": [{"k": 2}], "b": {"c": True}}
    assert jsoncodec.loads(nested) == json.loads(nested)
    clean = b'{"n": 123456789012345678901234567890, "x": NaN, "s": "\\u00e9"}'
    assert repr(jsoncodec.loads(clean, unique_keys=True)) == repr(json.loads(clean))
