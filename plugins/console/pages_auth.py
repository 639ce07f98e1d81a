"""Signing in and out, and the console's front page.

Signing in posts an admin key once. It is checked by the admin API's own authentication (the
``getMe`` operation: a valid, unrevoked key whose role grants at least one admin action);
the browser then gets a session cookie holding a random id, never the key (see
:mod:`plugins.console.sessions`).
"""

from __future__ import annotations

from aiohttp import web

from plugins.console.api import ApiError, call
from plugins.console.markup import NAV, Html, field, fill, hidden, join, link, notice, page_html
from plugins.console.web import (
    LOGIN_COOKIE,
    LOGIN_PATH,
    SESSION_COOKIE,
    SESSIONS,
    Visit,
    cross_site,
    delete_cookie,
    form_of,
    html_response,
    login_token,
    redirect,
    set_cookie,
    tokens_match,
)

#: Why the sign-in page is shown (``?why=``): fixed texts, nothing from the query echoed.
_WHY = {
    "ended": ("info", "Your session has ended: the key it used no longer works. Sign in "
              "again with a valid admin key."),
    "expired": ("info", "Your session has expired. Sign in again."),
    "out": ("ok", "You have signed out."),
}

#: What a refused sign-in says, by the admin API's status.
_REFUSED = {
    401: "That key is not valid: unknown, revoked, expired or mistyped.",
    403: "That key's role grants no admin action. Sign in with an admin key.",
    404: "The console needs sidecar keys (SIDECAR_AUTH_MODE=keys).",
    503: "The sidecar's key store cannot answer right now; try again shortly.",
}

_LOGIN = """
$message
<form class="card narrow" method="post" action="/admin/login">
$token
<p>Sign in with an admin sidecar key (<code>sk-sidecar-…</code>). The key stays on the
sidecar; your browser only keeps a session cookie that ends when you sign out, after
$idle minutes idle, or when the key stops working.</p>
$key
<button type="submit">Sign in</button>
</form>
"""


def _login_page(request: web.Request, message: Html, status: int = 200) -> web.Response:
    token = login_token()
    idle = round(request.app[SESSIONS].idle_seconds / 60)
    key = field("Admin key", "key", kind="password", required=True, autocomplete="off",
                spellcheck="false", autofocus=True)
    body = fill(_LOGIN, message=message, token=hidden("csrf", token), key=key, idle=idle)
    response = html_response(page_html("Sign in", body), status)
    set_cookie(response, request, LOGIN_COOKIE, token)
    return response


async def login_form(request: web.Request) -> web.StreamResponse:
    """``GET /admin/login``: the sign-in form (the front page when already signed in)."""
    if request.app[SESSIONS].find(request.cookies.get(SESSION_COOKIE)) is not None:
        return redirect("/admin/")
    why = _WHY.get(request.query.get("why", ""))
    return _login_page(request, notice(*why) if why else Html(""))


async def login(request: web.Request) -> web.StreamResponse:
    """``POST /admin/login``: check the key with the admin API, open a session."""
    form = await form_of(request)
    if cross_site(request) or not tokens_match(form.get("csrf"),
                                                request.cookies.get(LOGIN_COOKIE)):
        return _login_page(request, notice("error", "The sign-in form had expired or did not "
                                           "come from this console; try again."), 403)
    key = form.get("key", "").strip()
    if not key:
        return _login_page(request, notice("error", "Enter an admin key."), 400)
    try:
        me = await call(request.app, key, "getMe")
    except ApiError as error:
        message = _REFUSED.get(error.status, error.message)
        return _login_page(request, notice("error", message), error.status)
    sid, _session = request.app[SESSIONS].open(
        key, key_id=me["key_id"], owner=me["owner"], org=me["org"], role=me["role"],
        actions=tuple(me["actions"]))
    response = redirect("/admin/")
    set_cookie(response, request, SESSION_COOKIE, sid)
    delete_cookie(response, request, LOGIN_COOKIE)
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    """``POST /admin/logout``: end the session (the key leaves the sidecar's memory)."""
    sessions = request.app[SESSIONS]
    sid = request.cookies.get(SESSION_COOKIE)
    session = sessions.find(sid)
    if session is not None:
        form = await form_of(request)
        if cross_site(request) or not session.redeem_token(form.get("csrf")):
            return redirect("/admin/")
        sessions.close(sid)
    response = redirect(LOGIN_PATH + "?why=out")
    delete_cookie(response, request, SESSION_COOKIE)
    return response


_ABOUT = {
    "admin:keys": "Create, rotate and revoke your organisation's sidecar keys.",
    "admin:usage": "Requests, tokens and cost per day, model and owner.",
    "admin:records": "Browse stored conversations and read their entries.",
    "admin:state": "Circuit breaker, rate limiter, persistence spool and key pool, live.",
}


async def overview(visit: Visit) -> web.StreamResponse:
    """``GET /admin/``: who is signed in, and the pages their role opens."""
    session = visit.session
    cards = [fill('<li class="card">$link<p>$about</p></li>', link=link(path, label),
                  about=_ABOUT.get(action, ""))
             for path, label, action in NAV if action in session.actions]
    body = fill('<p class="lead">Signed in as <strong>$owner</strong> of organisation '
                '<strong>$org</strong> (role <code>$role</code>, key <code>$key_id</code>).'
                '</p><ul class="cards">$cards</ul>',
                owner=session.owner, org=session.org, role=session.role,
                key_id=session.key_id, cards=join(cards))
    return visit.page("Console", body, current="/admin/")
