"""The fast JSON codec gives the standard library's answers, including where orjson alone
would refuse (bodies callers really send: NaN, huge integers, lone surrogate escapes)."""

from __future__ import annotations

import json
import math

import pytest

from proxy import jsoncodec


@pytest.mark.parametrize("text", [
    b'{"model":"m","messages":[{"role":"user","content":"h\\u00e9"}]}',
    b'{"n": 123456789012345678901234567890}',
    b'{"n": 18446744073709551615, "m": -9223372036854775808}',
    b'{"s": "\\ud800 lone"}',
    b'[1.5, -0.0, 1e-7, true, null]',
    '{"unicode": "\u00e9\u4e2d"}'.encode(),
])
def test_loads_matches_the_standard_library(text: bytes) -> None:
    assert jsoncodec.loads(text) == json.loads(text)


def test_loads_accepts_nan_like_the_standard_library() -> None:
    assert math.isnan(jsoncodec.loads(b'{"x": NaN}')["x"])


def test_loads_rejects_what_the_standard_library_rejects() -> None:
    with pytest.raises(ValueError):
        jsoncodec.loads(b'{"x": ')


@pytest.mark.parametrize("value", [
    {"model": "m", "content": "h\u00e9\u4e2d", "n": 3, "f": 0.25, "list": [None, True]},
    {"big": 123456789012345678901234567890},
    {1: "non-string key"},
])
def test_dumps_writes_what_the_standard_library_writes(value: object) -> None:
    expected = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    assert jsoncodec.dumps(value) == expected
    assert jsoncodec.dumps_bytes(value) == expected.encode()
