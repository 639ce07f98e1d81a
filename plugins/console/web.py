"""What every console page shares: security headers, the session cookie, form tokens, HTML
answers and error pages.

Every answer carries a strict Content-Security-Policy (nothing but the console's own
stylesheet loads, no script runs, no other site may frame it or receive its forms),
``X-Frame-Options: DENY``, ``Referrer-Policy: no-referrer`` and ``Cache-Control: no-store``
(pages show keys' ids and, once, a new secret). The console is HTML, errors included; the
admin API under ``/admin/v1/`` stays JSON.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from plugins.console.api import ApiError, call
from plugins.console.markup import Html, fill, hidden, notice, page_html
from plugins.console.sessions import Session, SessionStore

logger = logging.getLogger("mistral_sidecar.console")

SESSION_COOKIE = "sidecar_console"
#: The sign-in form's own token (there is no session yet): the same value in a cookie and in
#: the form, which another site can neither read nor set.
LOGIN_COOKIE = "sidecar_console_login"
#: Cookies go back to the console's pages only, never to the API under /v1/.
COOKIE_PATH = "/admin/"
LOGIN_PATH = "/admin/login"

SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'none'; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True, slots=True)
class ConsoleConfig:
    """The console's settings."""

    #: Whether ``X-Forwarded-Proto: https`` from the proxy in front counts as HTTPS (cookies
    #: are then marked ``Secure``).
    trust_forwarded_proto: bool


CONFIG = web.AppKey("console_config", ConsoleConfig)
SESSIONS = web.AppKey("console_sessions", SessionStore)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# --- answers ---------------------------------------------------------------------------------


def html_response(body: Html, status: int = 200) -> web.Response:
    """An HTML answer with the console's security headers."""
    return web.Response(text=body, status=status, content_type="text/html", charset="utf-8",
                        headers=dict(SECURITY_HEADERS))


def redirect(location: str) -> web.Response:
    """``303 See Other`` to a console path (after a post, or to sign in)."""
    return web.Response(status=303, headers={**SECURITY_HEADERS, "Location": location})


def error_page(status: int, message: str, visit: Visit | None = None) -> web.Response:
    """An HTML error page: with the navigation when someone is signed in."""
    title = {400: "Not accepted", 403: "Not allowed", 404: "Not found",
             409: "Conflict", 503: "Unavailable"}.get(status, "Something went wrong")
    body = notice("error", message)
    if visit is not None:
        return visit.page(title, body, status=status)
    body = fill('$notice<p><a href="/admin/">Back to the console</a></p>', notice=body)
    return html_response(page_html(title, body), status)


def is_secure(request: web.Request) -> bool:
    """Whether ``request`` came over HTTPS (as the proxy in front says, when trusted)."""
    if request.secure:
        return True
    if not request.app[CONFIG].trust_forwarded_proto:
        return False
    forwarded = request.headers.get("X-Forwarded-Proto", "")
    return forwarded.split(",")[0].strip().lower() == "https"


def set_cookie(response: web.StreamResponse, request: web.Request, name: str,
               value: str) -> None:
    """Set a console cookie: HttpOnly, SameSite=Strict, Path=/admin/, Secure over HTTPS, and
    gone when the browser closes."""
    response.set_cookie(name, value, path=COOKIE_PATH, httponly=True, samesite="Strict",
                        secure=is_secure(request))


def delete_cookie(response: web.StreamResponse, request: web.Request, name: str) -> None:
    """Remove a console cookie from the browser."""
    response.del_cookie(name, path=COOKIE_PATH, httponly=True, samesite="Strict",
                        secure=is_secure(request))


def cross_site(request: web.Request) -> bool:
    """Whether the browser says the request comes from another site (``Sec-Fetch-Site``);
    browsers that do not say rely on the form token alone."""
    return request.headers.get("Sec-Fetch-Site", "").lower() in ("cross-site", "same-site")


async def form_of(request: web.Request) -> dict[str, str]:
    """The posted form's text fields (first value of each)."""
    posted = await request.post()
    out: dict[str, str] = {}
    for name, value in posted.items():
        if isinstance(value, str) and name not in out:
            out[name] = value
    return out


def tokens_match(a: str | None, b: str | None) -> bool:
    """Whether two tokens are present and equal (compared in constant time)."""
    return bool(a) and bool(b) and hmac.compare_digest(str(a).encode(), str(b).encode())


def login_token() -> str:
    """A fresh token for the sign-in form."""
    return secrets.token_urlsafe(24)


# --- a signed-in visit -----------------------------------------------------------------------


@dataclass
class Visit:
    """One request of a signed-in admin: the session, the posted form, and the admin API
    called with the session's key."""

    request: web.Request
    session: Session
    form: dict[str, str] = field(default_factory=dict)
    _token: str | None = None

    async def api(self, operation_id: str, **arguments: Any) -> Any:
        """The admin API's answer to ``operation_id`` (see :func:`plugins.console.api.call`)."""
        return await call(self.request.app, self.session.key, operation_id, **arguments)

    def token_field(self) -> Html:
        """The hidden form-token field of this page (one single-use token per page)."""
        if self._token is None:
            self._token = self.session.issue_token()
        return hidden("csrf", self._token)

    def page(self, title: str, body: Html, *, current: str = "",
             status: int = 200) -> web.Response:
        """A whole page for this admin."""
        session = self.session
        who = fill('<form class="who" method="post" action="/admin/logout">$token'
                   '<span title="key $key_id">$owner · $org · $role</span>'
                   '<button type="submit" class="link">Sign out</button></form>',
                   token=self.token_field(), key_id=session.key_id, owner=session.owner,
                   org=session.org, role=session.role)
        return html_response(page_html(title, body, current=current, actions=session.actions,
                                       who=who), status)


def _http_error(error: web.HTTPException, visit: Visit | None = None) -> web.Response:
    """What aiohttp raised (a form body over its size limit, say) as an HTML page; a
    redirect it raised goes on as it is."""
    if error.status < 400:
        raise error
    return error_page(error.status, error.reason, visit)


def console_page(handler: Callable[[Visit], Awaitable[web.StreamResponse]], *,
                 post: bool = False) -> Handler:
    """``handler`` for signed-in admins only: without a live session, a redirect to the
    sign-in page; a post without a live form token of the session, 403. What the admin API
    refuses becomes an error page (401: the key no longer works, the session ends)."""

    async def handle(request: web.Request) -> web.StreamResponse:
        sessions = request.app[SESSIONS]
        sid = request.cookies.get(SESSION_COOKIE)
        session = sessions.find(sid)
        if session is None:
            response = redirect(LOGIN_PATH + ("?why=expired" if sid else ""))
            if sid:
                delete_cookie(response, request, SESSION_COOKIE)
            return response
        visit = Visit(request, session)
        try:
            if post:
                visit.form = await form_of(request)
                if cross_site(request) or not session.redeem_token(visit.form.get("csrf")):
                    return error_page(403, "This form was already sent, has expired, or did "
                                      "not come from this console. Reload the page and try "
                                      "again.", visit)
            return await handler(visit)
        except ApiError as error:
            if error.status == 401:
                # Only this session: another one of the same key may hold a newer secret.
                sessions.close(sid)
                response = redirect(LOGIN_PATH + "?why=ended")
                delete_cookie(response, request, SESSION_COOKIE)
                return response
            return error_page(error.status, error.message, visit)
        except web.HTTPException as error:
            return _http_error(error, visit)
        except Exception:
            logger.exception("console page %s failed", request.path)
            return error_page(500, "The console failed to show this page; see the sidecar's "
                              "log.", visit)

    return handle


def public_page(handler: Handler) -> Handler:
    """``handler`` for pages open without a session (sign-in, static files, not found):
    an unexpected failure is an HTML error page."""

    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as error:
            return _http_error(error)
        except Exception:
            logger.exception("console page %s failed", request.path)
            return error_page(500, "The console failed to show this page; see the sidecar's "
                              "log.")

    return handle
