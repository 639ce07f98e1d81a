"""Request-body parsing and the few field checks the mock makes (422 on failure)."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from .errors import validation_failed

_TYPE_NAMES: dict[type, tuple[str, str]] = {
    str: ("string_type", "Input should be a valid string"),
    list: ("list_type", "Input should be a valid list"),
    dict: ("dict_type", "Input should be a valid dictionary"),
    int: ("int_type", "Input should be a valid integer"),
    bool: ("bool_type", "Input should be a valid boolean"),
}


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """Parse the request body as a JSON object or raise a 422 like the real API."""
    raw = await request.read()
    try:
        body = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise validation_failed(
            [
                {
                    "type": "json_invalid",
                    "loc": ["body", 0],
                    "msg": "JSON decode error",
                    "input": {},
                    "ctx": {"error": str(exc)},
                }
            ]
        ) from exc
    if not isinstance(body, dict):
        if body is None:
            raise validation_failed(
                [{"type": "missing", "loc": ["body"], "msg": "Field required", "input": None}]
            )
        raise validation_failed(
            [
                {
                    "type": "model_attributes_type",
                    "loc": ["body"],
                    "msg": "Input should be a valid dictionary or object to extract fields from",
                    "input": body,
                }
            ]
        )
    return body


def require(body: dict[str, Any], fields: dict[str, type | tuple[type, ...]]) -> None:
    """Check that every field in ``fields`` is present with the given type; 422 otherwise."""
    details: list[dict[str, Any]] = []
    for name, expected in fields.items():
        if name not in body or body[name] is None:
            details.append(
                {"type": "missing", "loc": ["body", name], "msg": "Field required", "input": body}
            )
            continue
        types = expected if isinstance(expected, tuple) else (expected,)
        value = body[name]
        # bool is an int subclass; the API does not accept true for an integer field.
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            kind, msg = _TYPE_NAMES.get(types[0], ("type_error", "Input has the wrong type"))
            details.append({"type": kind, "loc": ["body", name], "msg": msg, "input": value})
    if details:
        raise validation_failed(details)


def query_int(
    request: web.Request, name: str, default: int, minimum: int = 0, maximum: int | None = None
) -> int:
    """Read an integer query parameter, answering 422 when it is malformed or out of range."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise validation_failed(
            [
                {
                    "type": "int_parsing",
                    "loc": ["query", name],
                    "msg": "Input should be a valid integer, unable to parse string as an integer",
                    "input": raw,
                }
            ]
        ) from None
    if value < minimum or (maximum is not None and value > maximum):
        bound = (
            f"greater than or equal to {minimum}"
            if value < minimum
            else (f"less than or equal to {maximum}")
        )
        raise validation_failed(
            [
                {
                    "type": "bound",
                    "loc": ["query", name],
                    "msg": f"Input should be {bound}",
                    "input": raw,
                }
            ]
        )
    return value


def paginate(items: list[Any], page: int, page_size: int) -> list[Any]:
    """Return the ``page``-th (0-based) slice of ``page_size`` items."""
    start = page * page_size
    return items[start : start + page_size]
