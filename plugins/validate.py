"""Request validation: content types and well-formed JSON.

Runs on every proxied request before anything goes upstream:

- JSON endpoints (``operation.request_kind == "json"``) carrying a body require a JSON
  content type (``application/json`` or ``*/*+json``) -> 415, and a well-formed body -> 400;
  objects with a repeated key are refused too (-> 400), because the guard and upstream might
  otherwise read different values for the same field;
- multipart endpoints carrying a body require ``multipart/form-data`` -> 415;
- a request with several ``Content-Type`` headers is refused -> 400.

The body is parsed once, by the core (``ctx.json``); this plugin reports what that parse
found (``ctx.json_error``), and asks it to look for repeated keys
(:data:`proxy.context.UNIQUE_JSON_KEYS`).

Sizes are the core's job: request heads are limited while they are read
(``server.max_header_bytes``, ``server.max_header_count``: 431, :mod:`proxy.door`) and bodies
before this plugin runs (``limits.max_json_body_bytes``, ``limits.max_upload_bytes``: 413).
"""

from __future__ import annotations

import json

from aiohttp import web

from proxy import hookimpl
from proxy.app import SETTINGS
from proxy.context import UNIQUE_JSON_KEYS, RequestContext
from proxy.errors import SidecarError
from proxy.jsoncodec import DuplicateKeyError
from proxy.settings import Setting


@hookimpl
def sidecar_settings() -> list[Setting]:
    """Limits on the header set and the strictness of JSON parsing."""
    return [
        Setting("validate.reject_duplicate_keys", "bool", True,
                "Refuse JSON bodies in which an object repeats a key (400).",
                deprecated_env=("SIDECAR_REJECT_DUPLICATE_KEYS",)),
    ]


@hookimpl
def startup(app: web.Application) -> None:
    """Have the core's parse of request bodies look for repeated keys, when they are refused."""
    app[UNIQUE_JSON_KEYS] = bool(app[SETTINGS]["validate.reject_duplicate_keys"])


@hookimpl
def on_request(ctx: RequestContext) -> None:
    """Reject requests whose headers or body cannot be what the operation expects."""
    operation = ctx.operation
    request = ctx.request
    if operation is None or not request.body_exists:
        return
    content_types = request.headers.getall("Content-Type", [])
    if len(content_types) > 1:
        raise SidecarError(400, "The request has more than one Content-Type header.",
                           code="invalid_content_type")
    base = _base_type(content_types[0]) if content_types else ""
    where = f"{operation.method} {operation.path}"
    if operation.request_kind == "json":
        if not (base == "application/json" or base.endswith("+json")):
            raise SidecarError(
                415, f"{where} expects a JSON body: send Content-Type: application/json.")
        error = ctx.json_error
        if error is not None:
            raise SidecarError(400, _describe(error), code="invalid_json")
    elif operation.request_kind == "multipart" and base != "multipart/form-data":
        raise SidecarError(
            415, f"{where} expects a file upload: send Content-Type: multipart/form-data.")


def _describe(error: ValueError | RecursionError) -> str:
    """What is wrong with the body, for the caller."""
    if isinstance(error, DuplicateKeyError):
        return "The JSON body has an object that repeats a key."
    if isinstance(error, json.JSONDecodeError):
        return (f"The request body is not valid JSON: {error.msg} at line {error.lineno} "
                f"column {error.colno}.")
    if isinstance(error, RecursionError):
        return "The JSON body is nested too deeply."
    return "The request body is not valid JSON text."


def _base_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()
