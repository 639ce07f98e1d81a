"""Mistral-shaped error bodies and the exception handlers raise to send them."""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from aiohttp import web


def error_body(
    message: Any, error_type: str, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    """Return the error document the Mistral API sends: ``{"object": "error", ...}``."""
    return {"object": "error", "message": message, "type": error_type, "param": param, "code": code}


def default_error_body(status: int) -> dict[str, Any]:
    """Return a plausible Mistral error document for an arbitrary HTTP ``status``."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    error_type = "invalid_request_error" if status < 500 else "internal_server_error"
    return error_body(phrase, error_type, code=str(status))


class ApiError(Exception):
    """Raised by handlers to answer with ``status`` and a JSON ``body``."""

    def __init__(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(f"{status}: {body}")
        self.status = status
        self.body = body
        self.headers = dict(headers or {})

    def to_response(self) -> web.Response:
        """Render the error as an ``application/json`` response."""
        return web.json_response(self.body, status=self.status, headers=self.headers)


def not_found(message: str = "Not Found") -> ApiError:
    """A 404 in Mistral's shape, e.g. for an unknown route or resource id."""
    return ApiError(404, error_body(message, "invalid_request_error", code="404"))


def unauthorized() -> ApiError:
    """The 401 sent for a missing or unknown bearer token."""
    return ApiError(
        401,
        error_body("Unauthorized", "authentication_error", code="401"),
        headers={"WWW-Authenticate": "Bearer"},
    )


def validation_failed(details: list[dict[str, Any]]) -> ApiError:
    """A 422 carrying pydantic-style ``detail`` entries, as the real API nests them."""
    return ApiError(422, error_body({"detail": details}, "invalid_request_error"))


def bad_request(message: str, error_type: str = "invalid_request_error") -> ApiError:
    """A 400 with a plain message."""
    return ApiError(400, error_body(message, error_type, code="400"))
