"""The web console over plain HTTP, as a browser without JavaScript meets it: who may sign in,
what a visitor without a session sees, forms that did not come from the console, cookie
flags, security headers, secrets shown once and only once, escaping, sessions that end, and
the admin API's tenancy and roles seen through the console."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml
from mistralai.client.models import UserMessage

from plugins.auth.permissions import DEFAULT_ROLES
from tests.auth.auth_support import call, create_key
from tests.conftest import SidecarFactory, wait_for
from tests.console.console_support import (
    MODEL,
    ConsoleClient,
    Page,
    console_env,
    form_token,
    new_secret,
)

PAGES = ("/admin/", "/admin/keys", "/admin/usage", "/admin/conversations",
         "/admin/conversations/conv_0123", "/admin/health")
POSTS = ("/admin/keys", "/admin/keys/0123456789abcdef/rotate",
         "/admin/keys/0123456789abcdef/revoke")


def session_cookie(page: Page) -> str | None:
    """The Set-Cookie line that gives the console's session, if any."""
    return next((c for c in page.cookies if c.startswith("sidecar_console=")), None)


async def until_shown(browser: ConsoleClient, path: str, text: str) -> Page:
    """The page at ``path`` once it shows ``text`` (records are written in the
    background)."""
    async def shown() -> Page | None:
        page = await browser.get(path)
        return page if text in page.text else None

    page: Page = await wait_for(shown, timeout=10, interval=0.05)
    return page


def assert_security_headers(page: Page) -> None:
    """The console's headers on an answer."""
    csp = page.headers["Content-Security-Policy"]
    for directive in ("default-src 'self'", "script-src 'none'", "frame-ancestors 'none'",
                      "form-action 'self'"):
        assert directive in csp, csp
    assert page.headers["X-Frame-Options"] == "DENY"
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert "<script" not in page.text.lower()


async def test_only_a_valid_admin_key_signs_in(start_sidecar: SidecarFactory) -> None:
    sidecar = await start_sidecar(**console_env())
    admin = await create_key(sidecar.env, "root", "admin", "acme")
    user = await create_key(sidecar.env, "alice", "user", "acme")
    browser = ConsoleClient(sidecar.url)
    try:
        bogus = "sk-sidecar-0123456789abcdef-" + "A" * 43
        for key, status, said in ((bogus, 401, "That key is not valid"),
                                  (user.key, 403, "grants no admin action"),
                                  ("", 400, "Enter an admin key")):
            page = await browser.login(key)
            assert (page.status, page.url) == (status, sidecar.url + "/admin/login")
            assert said in page.text
            assert session_cookie(page) is None
            assert not key or key not in page.text

        # The sign-in form's token: missing, or from another site.
        page = await browser.post("/admin/login", {"key": admin.key})
        assert page.status == 403 and session_cookie(page) is None
        login = await browser.get("/admin/login")
        page = await browser.post("/admin/login", {"csrf": form_token(login.text),
                                                   "key": admin.key},
                                  headers={"Sec-Fetch-Site": "cross-site"})
        assert page.status == 403 and session_cookie(page) is None

        page = await browser.login(admin.key)
        assert (page.status, page.url) == (200, sidecar.url + "/admin/")
        assert "Signed in as root of organisation acme" in re.sub(r"<[^>]+>", "", page.text)
        cookie = session_cookie(page)
        assert cookie is not None
        flags = [part.strip().lower() for part in cookie.split(";")]
        assert {"httponly", "samesite=strict", "path=/admin/"} <= set(flags), cookie
        assert "secure" not in flags and not any(f.startswith("max-age") for f in flags)
        assert admin.key not in cookie and admin.key_id not in cookie
        # Signed in, the sign-in page leads to the console.
        assert (await browser.get("/admin/login")).url == sidecar.url + "/admin/"
    finally:
        await browser.close()


async def test_cookies_are_secure_over_https_behind_a_trusted_proxy(
    start_sidecar: SidecarFactory,
) -> None:
    for trusted in (True, False):
        sidecar = await start_sidecar(**console_env(
            SIDECAR_CONSOLE_TRUST_FORWARDED_PROTO=str(trusted).lower()))
        admin = await create_key(sidecar.env, "root", "admin", "acme")
        browser = ConsoleClient(sidecar.url)
        try:
            login = await browser.get("/admin/login")
            page = await browser.post("/admin/login", {"csrf": form_token(login.text),
                                                       "key": admin.key},
                                      headers={"X-Forwarded-Proto": "https"}, follow=False)
            assert page.status == 303
            cookie = session_cookie(page)
            assert cookie is not None
            assert ("secure" in cookie.lower().split("; ")) is trusted, cookie
        finally:
            await browser.close()


async def test_without_a_session_every_page_asks_to_sign_in(
    start_sidecar: SidecarFactory,
) -> None:
    sidecar = await start_sidecar(**console_env())
    admin = await create_key(sidecar.env, "root", "admin", "acme")
    browser = ConsoleClient(sidecar.url)
    try:
        for path in PAGES:
            page = await browser.get(path, follow=False)
            assert (page.status, page.headers["Location"]) == (303, "/admin/login"), path
            assert_security_headers(page)
        for path in POSTS:
            page = await browser.post(path, {"owner": "mallory", "role": "admin"},
                                      follow=False)
            assert (page.status, page.headers["Location"]) == (303, "/admin/login"), path
        # A cookie the console never gave (or whose session ended) is no session.
        page = await browser.get("/admin/keys", follow=False,
                                 headers={"Cookie": "sidecar_console=forged"})
        assert page.headers["Location"] == "/admin/login?why=expired"
        listed = await call(sidecar.url, "GET", "/admin/v1/keys", admin.key)
        assert [k["owner"] for k in listed.body["data"]] == ["root"]
    finally:
        await browser.close()


async def test_posts_need_a_fresh_token_of_the_session(start_sidecar: SidecarFactory) -> None:
    sidecar = await start_sidecar(**console_env())
    admin = await create_key(sidecar.env, "root", "admin", "acme")
    browser = ConsoleClient(sidecar.url)
    try:
        await browser.login(admin.key)
        keys = await browser.get("/admin/keys")
        token = form_token(keys.text)
        refused = [
            await browser.post("/admin/keys", {"owner": "mallory", "role": "admin"}),
            await browser.post("/admin/keys", {"csrf": "guessed", "owner": "mallory",
                                               "role": "admin"}),
            await browser.post("/admin/keys", {"csrf": token, "owner": "mallory",
                                               "role": "admin"},
                               headers={"Sec-Fetch-Site": "cross-site"}),
        ]
        for page in refused:
            assert page.status == 403
            assert "did not come from this console" in page.text
            assert_security_headers(page)

        # A page's token works once: sending the create form again makes no second key.
        keys = await browser.get("/admin/keys")
        form = {"csrf": form_token(keys.text), "owner": "bob", "role": "user"}
        first = await browser.post("/admin/keys", form)
        assert first.status == 200 and new_secret(first.text)
        again = await browser.post("/admin/keys", form)
        assert again.status == 403 and new_secret(again.text) is None
        listed = await call(sidecar.url, "GET", "/admin/v1/keys", admin.key)
        assert sorted(k["owner"] for k in listed.body["data"]) == ["bob", "root"]
    finally:
        await browser.close()


async def test_secrets_are_shown_once_and_never_the_admins_key(
    start_sidecar: SidecarFactory,
) -> None:
    sidecar = await start_sidecar(**console_env())
    admin = await create_key(sidecar.env, "root", "admin", "acme")
    browser = ConsoleClient(sidecar.url)
    seen: list[Page] = []
    try:
        seen.append(await browser.login(admin.key))
        created = await browser.submit("/admin/keys", "/admin/keys", owner="carol",
                                       role="user", name="ci", expires="30d")
        secret = new_secret(created.text)
        assert secret and secret.startswith("sk-sidecar-")
        assert "Copy the new secret now" in created.text
        assert (await call(sidecar.url, "GET", "/v1/models", secret)).status == 200
        key_id = secret.split("-")[2]

        # Rotating shows the new secret once; the old one stops working.
        rotated = await browser.submit("/admin/keys", f"/admin/keys/{key_id}/rotate")
        fresh = new_secret(rotated.text)
        assert fresh and fresh != secret
        assert (await call(sidecar.url, "GET", "/v1/models", secret)).status == 401
        assert (await call(sidecar.url, "GET", "/v1/models", fresh)).status == 200

        # Rotating the session's own key keeps the session (on the new secret).
        own = await browser.submit("/admin/keys", f"/admin/keys/{admin.key_id}/rotate")
        admin_fresh = new_secret(own.text)
        assert admin_fresh and (await browser.get("/admin/keys")).status == 200

        for path in (*PAGES, "/admin/keys?owner=carol", "/admin/login"):
            seen.append(await browser.get(path))
        for page in seen:
            assert_security_headers(page)
            assert page.headers["Cache-Control"] == "no-store"
            for hidden in (admin.key, admin_fresh, secret, fresh):
                assert hidden not in page.text, page.url
        carols = next(p for p in seen if p.url.endswith("/admin/keys?owner=carol"))
        assert key_id in carols.text
    finally:
        await browser.close()


async def test_what_callers_wrote_is_shown_as_text(start_sidecar: SidecarFactory) -> None:
    sidecar = await start_sidecar(**console_env())
    admin = await create_key(sidecar.env, "root", "admin", "acme")
    browser = ConsoleClient(sidecar.url)
    hostile = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    try:
        await browser.login(admin.key)
        created = await browser.submit("/admin/keys", "/admin/keys", owner=hostile,
                                       role="user", name=hostile)
        assert created.status == 200
        secret = new_secret(created.text)
        assert secret is not None
        started = await sidecar.sdk(secret).beta.conversations.start_async(
            model=MODEL, inputs=hostile)
        listed = await until_shown(browser, "/admin/conversations", started.conversation_id)
        page = await until_shown(browser, f"/admin/conversations/{started.conversation_id}",
                                 "Assistant")
        for shown in (created, listed, page):
            assert "<script" not in shown.text and "<img" not in shown.text
            assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in shown.text
    finally:
        await browser.close()


async def test_a_session_ends_with_sign_out_or_with_its_key(
    start_sidecar: SidecarFactory,
) -> None:
    sidecar = await start_sidecar(**console_env())
    first = await create_key(sidecar.env, "root", "admin", "acme")
    second = await create_key(sidecar.env, "ops", "admin", "acme")
    browser = ConsoleClient(sidecar.url)
    other = ConsoleClient(sidecar.url)
    try:
        page = await browser.login(first.key)
        cookie = session_cookie(page)
        assert cookie is not None
        sid = cookie.split(";")[0].split("=", 1)[1]
        out = await browser.submit("/admin/keys", "/admin/logout")
        assert out.url == sidecar.url + "/admin/login?why=out"
        assert "You have signed out." in out.text
        # The old cookie, replayed, opens nothing.
        replay = await other.get("/admin/keys", follow=False,
                                 headers={"Cookie": f"sidecar_console={sid}"})
        assert replay.headers["Location"] == "/admin/login?why=expired"

        # Another admin revokes the key a session signed in with: the session ends.
        await browser.login(first.key)
        revoked = await call(sidecar.url, "POST", f"/admin/v1/keys/{first.key_id}/revoke",
                             second.key)
        assert revoked.status == 200
        page = await browser.get("/admin/usage")
        assert page.url == sidecar.url + "/admin/login?why=ended"
        assert "no longer works" in page.text
    finally:
        await browser.close()
        await other.close()


async def test_the_console_shows_only_the_admins_organisation(
    start_sidecar: SidecarFactory,
) -> None:
    sidecar = await start_sidecar(**console_env())
    acme = await create_key(sidecar.env, "root", "admin", "acme")
    beta = await create_key(sidecar.env, "boss", "admin", "beta")
    beta_user = await create_key(sidecar.env, "bea", "user", "beta")
    started = await sidecar.sdk(beta_user.key).beta.conversations.start_async(
        model=MODEL, inputs="beta's secret plans")
    stored = f"/admin/v1/conversations/{started.conversation_id}"

    async def beta_sees_it() -> bool:
        return (await call(sidecar.url, "GET", stored, beta.key)).status == 200

    await wait_for(beta_sees_it, timeout=10, interval=0.05)
    browser = ConsoleClient(sidecar.url)
    try:
        await browser.login(acme.key)
        keys = await browser.get("/admin/keys")
        assert acme.key_id in keys.text
        assert beta.key_id not in keys.text and beta_user.key_id not in keys.text
        listed = await browser.get("/admin/conversations")
        assert started.conversation_id not in listed.text
        page = await browser.get(f"/admin/conversations/{started.conversation_id}")
        assert page.status == 404 and "secret plans" not in page.text
        assert "text/html" in page.headers["Content-Type"]
        # Another organisation's key cannot be revoked through the console either.
        refused = await browser.submit("/admin/keys", f"/admin/keys/{beta.key_id}/revoke")
        assert refused.status == 404
        assert (await call(sidecar.url, "GET", "/v1/models", beta.key)).status == 200
    finally:
        await browser.close()


async def test_a_tailored_admin_role_opens_only_its_pages(
    start_sidecar: SidecarFactory, tmp_path: Path,
) -> None:
    config = tmp_path / "roles.yaml"
    config.write_text(yaml.safe_dump({"auth": {"roles": {
        "admin": ["*"], "user": DEFAULT_ROLES["user"], "finance": ["admin:usage"]}}}))
    sidecar = await start_sidecar(config_file=config, **console_env())
    finance = await create_key({**sidecar.env, "SIDECAR_CONFIG": str(config)}, "fran",
                               "finance", "acme")
    browser = ConsoleClient(sidecar.url)
    try:
        front = await browser.login(finance.key)
        assert front.status == 200
        nav = front.text.split("<nav", 1)[1].split("</nav>", 1)[0]
        assert 'href="/admin/usage"' in nav and 'href="/admin/keys"' not in nav
        assert (await browser.get("/admin/usage")).status == 200
        for path in ("/admin/keys", "/admin/health", "/admin/conversations"):
            page = await browser.get(path)
            assert page.status == 403 and "does not allow" in page.text, path
    finally:
        await browser.close()


async def test_the_api_stays_json_beside_the_console(start_sidecar: SidecarFactory) -> None:
    sidecar = await start_sidecar(**console_env())
    browser = ConsoleClient(sidecar.url)
    try:
        for path, status in (("/admin/v1/keys", 401), ("/admin/v1/nope", 404),
                             ("/admin/v1", 404)):
            page = await browser.get(path)
            assert page.status == status, path
            assert page.headers["Content-Type"].startswith("application/json"), path
        page = await browser.get("/admin/nope")
        assert page.status == 404 and page.headers["Content-Type"].startswith("text/html")
        assert_security_headers(page)
        page = await browser.get("/admin", follow=False)
        assert (page.status, page.headers["Location"]) == (308, "/admin/")
        css = await browser.get("/admin/static/console.css")
        assert css.status == 200 and css.headers["Content-Type"].startswith("text/css")
    finally:
        await browser.close()


async def test_conversations_are_searched_by_owner_agent_and_day(
    start_sidecar: SidecarFactory,
) -> None:
    sidecar = await start_sidecar(**console_env())
    admin = await create_key(sidecar.env, "root", "admin", "acme")
    alice = await create_key(sidecar.env, "alice", "user", "acme")
    bob = await create_key(sidecar.env, "bob", "user", "acme")
    mine = await sidecar.sdk(alice.key).beta.conversations.start_async(model=MODEL,
                                                                        inputs="alice here")
    theirs = await sidecar.sdk(bob.key).beta.conversations.start_async(model=MODEL,
                                                                        inputs="bob here")
    today = datetime.now(UTC).date()
    browser = ConsoleClient(sidecar.url)
    try:
        await browser.login(admin.key)
        everyone = await until_shown(browser, "/admin/conversations", theirs.conversation_id)
        assert mine.conversation_id in everyone.text
        page = await browser.get("/admin/conversations?owner=alice")
        assert mine.conversation_id in page.text and theirs.conversation_id not in page.text
        page = await browser.get("/admin/conversations?agent_id=ag_none")
        assert "No conversation matches." in page.text
        for since, until, found in ((today, today, True), (today + timedelta(days=1), "", False),
                                    ("", today - timedelta(days=1), False)):
            page = await browser.get(f"/admin/conversations?from={since}&to={until}")
            assert (mine.conversation_id in page.text) is found, (since, until)
        page = await browser.get("/admin/conversations?from=last+week")
        assert page.status == 400 and "expected a day" in page.text
    finally:
        await browser.close()


async def test_usage_is_charted_per_day_and_model(start_sidecar: SidecarFactory) -> None:
    sidecar = await start_sidecar(**console_env())
    admin = await create_key(sidecar.env, "root", "admin", "acme")
    alice = await create_key(sidecar.env, "alice", "user", "acme")
    for text in ("one", "two", "three"):
        await sidecar.sdk(alice.key).chat.complete_async(
            model=MODEL, messages=[UserMessage(content=text)])
    today = datetime.now(UTC).date().isoformat()
    browser = ConsoleClient(sidecar.url)
    try:
        await browser.login(admin.key)
        page = await until_shown(browser, "/admin/usage",
                                 "<span>Requests</span><strong>3</strong>")
        assert "<span>Errors</span><strong>0</strong>" in page.text
        assert '<h2 id="by-owner">' in page.text and "<td>alice</td>" in page.text
        assert page.text.count("<figure class=\"chart\">") >= 2
        assert f"<title>{today} · {MODEL}: 3 requests</title>" in page.text
        page = await browser.get(f"/admin/usage?from={today}&to=2000-01-01")
        assert page.status == 400 and "must not be after" in page.text
        page = await browser.get("/admin/usage?from=2000-01-01&to=2000-01-31")
        assert "No usage in this period." in page.text
    finally:
        await browser.close()


async def test_an_oversized_form_is_refused_with_a_page(start_sidecar: SidecarFactory) -> None:
    sidecar = await start_sidecar(**console_env())
    browser = ConsoleClient(sidecar.url)
    try:
        login = await browser.get("/admin/login")
        page = await browser.post("/admin/login", {"csrf": form_token(login.text),
                                                   "key": "k" * (2 * 1024 * 1024)})
        assert page.status == 413 and page.headers["Content-Type"].startswith("text/html")
        assert_security_headers(page)
    finally:
        await browser.close()


async def test_rotating_the_own_key_ends_only_the_other_sessions(
    start_sidecar: SidecarFactory,
) -> None:
    sidecar = await start_sidecar(**console_env())
    admin = await create_key(sidecar.env, "root", "admin", "acme")
    laptop, phone = ConsoleClient(sidecar.url), ConsoleClient(sidecar.url)
    try:
        await laptop.login(admin.key)
        await phone.login(admin.key)
        rotated = await laptop.submit("/admin/keys", f"/admin/keys/{admin.key_id}/rotate")
        fresh = new_secret(rotated.text)
        assert fresh is not None
        stale = await phone.get("/admin/keys")
        assert stale.url == sidecar.url + "/admin/login?why=ended"
        assert (await laptop.get("/admin/health")).status == 200
        assert (await phone.login(fresh)).url == sidecar.url + "/admin/"
    finally:
        await laptop.close()
        await phone.close()
