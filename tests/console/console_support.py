"""Helpers for the web console's tests: the chain, admin keys made with the real CLI, and a
cookie-keeping HTTP client that reads and posts the console's forms as a browser would."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from proxy.settings import DEFAULT_CHAIN
from tests.conftest import REPO

#: The default chain, then the admin API and the console over it.
FULL_CHAIN = ",".join([*DEFAULT_CHAIN, *(p for p in ("admin", "console")
                                        if p not in DEFAULT_CHAIN)])
#: What the plain-HTTP tests need: keys, records, the API, the console.
SMALL_CHAIN = "store,auth,persistence,admin,console"
MODEL = "mistral-small-latest"
_ENV_PREFIXES = ("SIDECAR_", "MISTRAL_", "DB_", "REDIS_", "RATE_LIMIT_")
_TOKEN = re.compile(r'name="csrf" value="([^"]+)"')
_SECRET = re.compile(r'id="new-secret">([^<]+)<')


def console_env(chain: str = SMALL_CHAIN, **extra: str) -> dict[str, str]:
    """Environment for a sidecar serving the console (records written at once)."""
    return {"SIDECAR_PLUGINS_CHAIN": chain, "SIDECAR_DB_MIGRATE_ON_START": "true",
            "SIDECAR_PERSISTENCE_FLUSH_INTERVAL_SECONDS": "0.02", **extra}


def cli_key(env: Mapping[str, str], owner: str, role: str, org: str) -> str:
    """``mistral-sidecar keys create`` run as an operator runs it; returns the key."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(_ENV_PREFIXES)}
    clean.update(env)
    done = subprocess.run(
        [sys.executable, "-m", "proxy.cli", "keys", "create", "--owner", owner, "--role", role,
         "--org", org], env=clean, cwd=REPO, capture_output=True, text=True, timeout=60,
        check=False)
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip().splitlines()[-1]
    assert key.startswith("sk-sidecar-"), done.stdout
    return key


def form_token(page: str) -> str:
    """The form token of a console page."""
    found = _TOKEN.search(page)
    assert found, "no form token on the page"
    return found.group(1)


def new_secret(page: str) -> str | None:
    """The one-time secret a page shows, if any."""
    found = _SECRET.search(page)
    return found.group(1) if found else None


@dataclass
class Page:
    """One answer of the console."""

    status: int
    url: str
    headers: Mapping[str, str]
    cookies: list[str]
    text: str


class ConsoleClient:
    """A browser-like client: keeps cookies, follows redirects, posts forms."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def close(self) -> None:
        """Close the connection pool."""
        await self.session.close()

    async def get(self, path: str, follow: bool = True, **kwargs: Any) -> Page:
        """``GET path``."""
        return await self._send("GET", path, follow=follow, **kwargs)

    async def post(self, path: str, form: Mapping[str, str], follow: bool = True,
                   **kwargs: Any) -> Page:
        """``POST path`` with a urlencoded form."""
        return await self._send("POST", path, follow=follow, data=dict(form), **kwargs)

    async def submit(self, page_path: str, action: str, **fields: str) -> Page:
        """Open ``page_path`` and post its form (with the page's token) to ``action``."""
        page = await self.get(page_path)
        return await self.post(action, {"csrf": form_token(page.text), **fields})

    async def login(self, key: str) -> Page:
        """Sign in with ``key`` through the sign-in form."""
        return await self.submit("/admin/login", "/admin/login", key=key)

    async def _send(self, method: str, path: str, follow: bool, **kwargs: Any) -> Page:
        async with self.session.request(method, self.base_url + path, allow_redirects=follow,
                                        **kwargs) as resp:
            cookies = list(resp.headers.getall("Set-Cookie", []))
            for earlier in resp.history:
                cookies.extend(earlier.headers.getall("Set-Cookie", []))
            return Page(resp.status, str(resp.url), resp.headers.copy(), cookies,
                        await resp.text())
