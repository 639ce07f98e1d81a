"""Request validation: content types and well-formed JSON.

Runs on every proxied request before anything goes upstream:

- JSON endpoints (``operation.request_kind == "json"``) carrying a body require a JSON
  content type (``application/json`` or ``*/*+json``) -> 415, and a well-formed body -> 400;
  objects with a repeated key are refused too (-> 400), because the guard and upstream might
  otherwise read different values for the same field;
- multipart endpoints carrying a body require ``multipart/form-data`` -> 415;
- a request with several ``Content-Type`` headers is refused -> 400.

Sizes are the core's job: request heads are limited while they are read
(``server.max_header_bytes``, ``server.max_header_count``: 431, :mod:`proxy.door`) and bodies
before this plugin runs (``limits.max_json_body_bytes``, ``limits.max_upload_bytes``: 413).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from proxy import hookimpl
from proxy.app import SETTINGS
from proxy.context import RequestContext
from proxy.errors import SidecarError
from proxy.settings import Setting

__all__ = ["VALIDATE_CONFIG", "ValidateConfig"]


@dataclass(frozen=True, slots=True)
class ValidateConfig:
    """The validation limits, read once at start-up."""

    reject_duplicate_keys: bool


VALIDATE_CONFIG = web.AppKey("validate_config", ValidateConfig)



class _DuplicateKey(ValueError):
    """A JSON object repeats a key."""


@hookimpl
def sidecar_settings() -> list[Setting]:
    """Limits on the header set and the strictness of JSON parsing."""
    return [
        Setting("validate.reject_duplicate_keys", "bool", True,
                "Refuse JSON bodies in which an object repeats a key (400).",
                env="SIDECAR_REJECT_DUPLICATE_KEYS"),
    ]


@hookimpl
def startup(app: web.Application) -> None:
    """Read the limits once."""
    settings = app[SETTINGS]
    app[VALIDATE_CONFIG] = ValidateConfig(
        reject_duplicate_keys=bool(settings["validate.reject_duplicate_keys"]),
    )


@hookimpl
def on_request(ctx: RequestContext) -> None:
    """Reject requests whose headers or body cannot be what the operation expects."""
    config = ctx.app[VALIDATE_CONFIG]
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
        _check_json(ctx, config)
    elif operation.request_kind == "multipart" and base != "multipart/form-data":
        raise SidecarError(
            415, f"{where} expects a file upload: send Content-Type: multipart/form-data.")


def _check_json(ctx: RequestContext, config: ValidateConfig) -> None:
    body = ctx.body
    if not body:
        return
    # A parse of our own rather than ``ctx.json``: it must tell a literal ``null`` from
    # garbage and see repeated keys, which the lenient parse hides.
    try:
        parsed = json.loads(body, object_pairs_hook=_unique_pairs
                            if config.reject_duplicate_keys else None)
    except _DuplicateKey:
        raise SidecarError(400, "The JSON body has an object that repeats a key.",
                           code="invalid_json") from None
    except json.JSONDecodeError as exc:
        raise SidecarError(
            400, f"The request body is not valid JSON: {exc.msg} at line {exc.lineno} "
            f"column {exc.colno}.", code="invalid_json") from None
    except (ValueError, UnicodeDecodeError):
        raise SidecarError(400, "The request body is not valid JSON text.",
                           code="invalid_json") from None
    except RecursionError:
        raise SidecarError(400, "The JSON body is nested too deeply.",
                           code="invalid_json") from None
    # Later plugins read ctx.json: hand them this parse instead of a second one.
    ctx.set_parsed_json(parsed)


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise _DuplicateKey()
    return result


def _base_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()
