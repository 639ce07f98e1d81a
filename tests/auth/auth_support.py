"""Helpers for the auth tests: run the real CLI, create keys, call the sidecar over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from unittest import mock

import aiohttp

from proxy.cli import main

AUTH_PLUGINS = "store,auth"
_ENV_PREFIXES = ("SIDECAR_", "MISTRAL_", "DB_", "REDIS_")
_ENV_LOCK = threading.Lock()


def auth_env(store_env: Mapping[str, str], **extra: str) -> dict[str, str]:
    """Environment for a sidecar with the store and auth plugins on the given store."""
    env = {"SIDECAR_PLUGINS_CHAIN": AUTH_PLUGINS, "SIDECAR_DB_MIGRATE_ON_START": "true",
           "SIDECAR_DB_TIMEOUT_SECONDS": "1"}
    env.update(store_env)
    env.update(extra)
    return env


@dataclass
class CliResult:
    """Exit code and output of one CLI run."""

    code: int
    out: str
    err: str

    @property
    def last_line(self) -> str:
        """The last line printed on stdout."""
        return self.out.strip().splitlines()[-1]


def _run_cli_sync(env: Mapping[str, str], args: list[str], stdin: str = "") -> CliResult:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(_ENV_PREFIXES)}
    clean.update(env)
    out, err = io.StringIO(), io.StringIO()
    with _ENV_LOCK, mock.patch.dict(os.environ, clean, clear=True), \
            mock.patch("sys.stdin", io.StringIO(stdin)), \
            contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(args)
        except SystemExit as exc:
            code = int(exc.code or 0)
    return CliResult(code, out.getvalue(), err.getvalue())


async def run_cli(env: Mapping[str, str], *args: str, stdin: str = "") -> CliResult:
    """Run ``mistral-sidecar ARGS`` in-process (off the event loop) with ``env``."""
    return await asyncio.to_thread(_run_cli_sync, env, list(args), stdin)


@dataclass
class Key:
    """A key issued through the CLI."""

    key_id: str
    key: str
    owner: str
    role: str
    org: str


async def create_key(env: Mapping[str, str], owner: str, role: str, org: str = "default",
                     *extra: str) -> Key:
    """``keys create``; returns the printed key."""
    result = await run_cli(env, "keys", "create", "--owner", owner, "--role", role,
                           "--org", org, *extra)
    assert result.code == 0, result.err
    key = result.last_line
    assert key.startswith("sk-sidecar-")
    return Key(key_id=key.split("-")[2], key=key, owner=owner, role=role, org=org)


@dataclass
class Reply:
    """A raw HTTP answer from the sidecar."""

    status: int
    headers: Mapping[str, str]
    body: Any
    text: str


async def call(base_url: str, method: str, path: str, key: str | None = None,
               json: Any = None, headers: Mapping[str, str] | None = None,
               params: Mapping[str, str] | None = None) -> Reply:
    """One request; ``key`` goes in ``Authorization: Bearer``."""
    sent = dict(headers or {})
    if key is not None:
        sent["Authorization"] = f"Bearer {key}"
    async with aiohttp.ClientSession() as session, session.request(
        method, base_url + path, json=json, headers=sent, params=params,
    ) as resp:
        text = await resp.text()
        try:
            body = await resp.json(content_type=None)
        except ValueError:
            body = None
        return Reply(resp.status, resp.headers.copy(), body, text)


def is_mistral_error(body: Any) -> bool:
    """Whether ``body`` has Mistral's error shape."""
    return (isinstance(body, dict) and body.get("object") == "error"
            and {"message", "type", "code"} <= set(body))


async def start_conversation(base_url: str, key: str, text: str = "hello",
                             **fields: Any) -> str:
    """Start a model conversation; returns its id."""
    body = {"model": "mistral-small-latest", "inputs": text, **fields}
    reply = await call(base_url, "POST", "/v1/conversations", key, json=body)
    assert reply.status == 200, reply.text
    conversation_id: str = reply.body["conversation_id"]
    return conversation_id


async def create_agent(base_url: str, key: str, name: str = "helper") -> str:
    """Create an agent; returns its id."""
    reply = await call(base_url, "POST", "/v1/agents", key,
                       json={"model": "mistral-small-latest", "name": name})
    assert reply.status == 200, reply.text
    agent_id: str = reply.body["id"]
    return agent_id


async def upload_file(base_url: str, key: str, content: bytes = b'{"a": 1}\n') -> Reply:
    """Upload a small batch input file (multipart, like the SDK)."""
    form = aiohttp.FormData()
    form.add_field("purpose", "batch")
    form.add_field("file", content, filename="input.jsonl",
                   content_type="application/octet-stream")
    async with aiohttp.ClientSession() as session, session.post(
        base_url + "/v1/files", data=form, headers={"Authorization": f"Bearer {key}"},
    ) as resp:
        text = await resp.text()
        body = await resp.json(content_type=None) if text else None
        return Reply(resp.status, resp.headers.copy(), body, text)
