"""The admin API, called in-process with the signed-in admin's key.

The console reads and changes nothing itself: every page is one or more calls of the admin
plugin's routes (:data:`plugins.admin.ROUTES`, named by their OpenAPI ``operationId``), run
as ``/admin/v1/`` runs them: the key authenticated by
:func:`plugins.admin.access.authenticate` with the route's admin action, then the route's
handler. So the console and the API cannot disagree on who may do what, on tenancy or on
validation, and the console shows this process's live state (a loopback HTTP call could be
answered by another worker). The handlers read a request's method, headers, query, path
parameters and JSON body; :class:`_Call` carries exactly those.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any, cast

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy, MultiDict, MultiDictProxy

from plugins.admin import ROUTES
from plugins.admin.access import authenticate
from plugins.admin.plumbing import AdminRequest, to_the_end
from proxy.errors import SidecarError

logger = logging.getLogger("mistral_sidecar.console")

_BY_OPERATION = {route.operation_id: route for route in ROUTES}


class ApiError(Exception):
    """The admin API refused or failed: its status and Mistral-shaped error."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


class _Body:
    """A request body that is all there already (the part of a ``StreamReader`` the admin
    API's handlers read)."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    async def readany(self) -> bytes:
        data, self._data = self._data, b""
        return data


class _Call:
    """One admin API request made in-process: what its handlers read of an
    ``aiohttp.web.Request``."""

    def __init__(self, app: web.Application, method: str, path: str, key: str,
                 params: Mapping[str, str], query: Mapping[str, str], body: bytes) -> None:
        self.app = app
        self.method = method
        self.path = path
        self.headers = CIMultiDictProxy(CIMultiDict({"Authorization": f"Bearer {key}"}))
        self.query = MultiDictProxy(MultiDict(query))
        self.match_info = dict(params)
        self.content_type = "application/json" if body else "application/octet-stream"
        self.content_length = len(body)
        self.content = _Body(body)


async def call(app: web.Application, key: str, operation_id: str, *,
               params: Mapping[str, str] | None = None,
               query: Mapping[str, str | None] | None = None,
               body: Mapping[str, Any] | None = None) -> Any:
    """Run admin API operation ``operation_id`` as the holder of ``key`` and return its JSON
    answer; raise :class:`ApiError` with the API's status and message when it refuses.

    ``params`` fill the route's path, ``query`` its query string (``None`` and empty values
    are left out, as an empty form field means "no filter"), ``body`` its JSON body.
    """
    route = _BY_OPERATION.get(operation_id)
    if route is None:
        raise ApiError(500, f"The admin API has no operation {operation_id}.")
    params = dict(params or {})
    arguments = {name: value for name, value in (query or {}).items() if value}
    data = b"" if body is None else json.dumps(dict(body)).encode()
    request = _Call(app, route.method, route.path.format(**params), key, params, arguments,
                    data)
    try:
        caller = await authenticate(cast(web.Request, request), route.action)
        handled = route.handler(AdminRequest(cast(web.Request, request), caller))
        response = await (handled if route.method == "GET" else to_the_end(app, handled))
    except SidecarError as error:
        raise ApiError(error.status, error.message, error.code) from None
    except Exception:
        logger.exception("console: admin operation %s failed", operation_id)
        raise ApiError(500, "The admin API failed to answer; see the sidecar's log.") from None
    answer = json.loads(cast(bytes, response.body))
    if response.status >= 400:
        raise ApiError(response.status, str(answer.get("message", "")), answer.get("code"))
    return answer
