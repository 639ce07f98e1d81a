"""Reading records back (``mistral-sidecar conversations show`` and ``usage``) and retention."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import subprocess
import sys
import time

from plugins.persistence.retention import RetentionPurger
from plugins.store import DATABASE
from proxy.cli import main
from tests.conftest import REPO, Sidecar, SidecarFactory, wait_for
from tests.persistence.persistence_helpers import MODEL, PLUGINS, StoreReader, persist_env

PROBE = f"{PLUGINS},tests.persistence.persistence_probe"
OLD = "2000-01-01T00:00:00.000000Z"


def _cli_env(env: dict[str, str]) -> dict[str, str]:
    full = {k: v for k, v in os.environ.items()
            if not k.startswith(("SIDECAR_", "MISTRAL_", "DB_"))}
    full.update({k: v for k, v in env.items() if k.startswith(("SIDECAR_", "DB_"))})
    full["SIDECAR_PLUGINS_CHAIN"] = env.get("SIDECAR_PLUGINS_CHAIN", PLUGINS)
    return full


def cli_process(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``mistral-sidecar ARGS`` as a process with the sidecar's store settings."""
    return subprocess.run([sys.executable, "-m", "proxy.cli", *args], env=_cli_env(env),
                          cwd=REPO, capture_output=True, text=True, timeout=60)


def cli(env: dict[str, str], *commands: tuple[str, ...]) -> list[tuple[int, str, str]]:
    """Run several CLI commands in this process (the same ``main`` the console script calls,
    without paying for a Python start-up each); returns ``(exit code, stdout, stderr)``s."""
    results = []
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(_cli_env(env))
    try:
        for args in commands:
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    code = main(list(args))
                except SystemExit as exit_:
                    code = int(exit_.code or 0)
            results.append((code, out.getvalue(), err.getvalue()))
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return results


async def _chat(sidecar: Sidecar, owner: str, text: str) -> None:
    client = sidecar.sdk()
    await client.chat.complete_async(model=MODEL, messages=[{"role": "user", "content": text}],
                                     http_headers={"X-Test-Owner": owner})


async def test_conversations_show_and_usage(
    start_sidecar: SidecarFactory, store_env: dict[str, str]
) -> None:
    sidecar = await start_sidecar(**persist_env(store_env, SIDECAR_PLUGINS_CHAIN=PROBE))
    db = StoreReader(sidecar.env)
    sdk = sidecar.sdk()
    started = await sdk.beta.conversations.start_async(
        model=MODEL, inputs="hello from the cli test", name="cli-chat")
    cid = started.conversation_id
    appended = await sdk.beta.conversations.append_async(conversation_id=cid,
                                                         inputs="line one\nline two")
    await _chat(sidecar, "alice", "one two three")
    await _chat(sidecar, "alice", "four")
    await _chat(sidecar, "bob", "five six")
    await wait_for(lambda: db.count("SELECT COUNT(*) AS n FROM usage_log") == 5)

    shown, as_json, alice, future, unknown, bad_date = await asyncio.to_thread(
        cli, sidecar.env,
        ("conversations", "show", cid),
        ("conversations", "show", cid, "--json"),
        ("usage", "--owner", "alice", "--json", "--since", "2000-01-01"),
        ("usage", "--since", "2999-01-01"),
        ("conversations", "show", "conv_nope"),
        ("usage", "--since", "last tuesday"))
    # One run as a real process: the console-script path end to end.
    usage = await asyncio.to_thread(cli_process, sidecar.env, "usage")

    assert shown[0] == 0, shown[2]
    text = shown[1]
    assert f"conversation {cid}" in text and "name 'cli-chat'" in text and "4 entries" in text
    assert "    hello from the cli test" in text
    assert f"    {started.outputs[0].content}" in text  # type: ignore[union-attr]
    assert "    line one\n    line two" in text
    assert f"tokens={appended.usage.prompt_tokens}/0" in text
    assert text.index("hello from the cli test") < text.index("line one")

    document = json.loads(as_json[1])
    assert document["conversation"]["id"] == cid
    assert [e["content"] for e in document["entries"]] == [
        "hello from the cli test", started.outputs[0].content,  # type: ignore[union-attr]
        "line one\nline two", appended.outputs[0].content]  # type: ignore[union-attr]
    assert document["entries"][1]["completion_tokens"] == started.usage.completion_tokens

    assert usage.returncode == 0, usage.stderr
    lines = usage.stdout.splitlines()
    assert lines[0].split() == ["owner", "model", "requests", "errors", "prompt",
                                "completion", "total", "cost", "currency", "unpriced"]
    by_owner = {line.split()[0]: line.split() for line in lines[1:]}
    assert by_owner["alice"][1:4] == [MODEL, "2", "0"]
    assert by_owner["anonymous"][2] == "2"
    anonymous_total = started.usage.total_tokens + appended.usage.total_tokens
    assert by_owner["anonymous"][6] == str(anonymous_total)
    # Nothing priced these requests (no prices plugin): their cost is unknown, and said so.
    assert by_owner["anonymous"][7:] == ["unknown", "-", "2"]
    assert by_owner["TOTAL"][1:3] == ["5", "0"]

    summary = json.loads(alice[1])
    assert summary == [{"owner_id": "alice", "model": MODEL, "requests": 2, "errors": 0,
                        "prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10,
                        "cost": None, "currency": None, "unpriced": 2, "estimated": 0}]
    assert future[0] == 0 and future[1].splitlines()[-1].split()[:2] == ["TOTAL", "0"]
    assert unknown[0] == 1 and "conv_nope" in unknown[2]
    assert bad_date[0] == 2 and "--since" in bad_date[2]


async def test_retention_purges_old_records_in_the_background(
    start_sidecar: SidecarFactory, store_env: dict[str, str]
) -> None:
    sidecar = await start_sidecar(**persist_env(
        store_env, SIDECAR_PERSISTENCE_RETENTION_DAYS="30",
        SIDECAR_PERSISTENCE_RETENTION_INTERVAL_SECONDS="1"))
    db = StoreReader(sidecar.env)
    fresh = await sidecar.sdk().beta.conversations.start_async(model=MODEL, inputs="keep me")
    await wait_for(lambda: len(db.entries(fresh.conversation_id)) == 2)
    db.execute("INSERT INTO conversations (id, owner_id, status, created_at, updated_at) "
               "VALUES ('conv_old', 'x', 'active', ?, ?)", (OLD, OLD))
    db.execute("INSERT INTO conversation_entries (id, conversation_id, seq, type, created_at) "
               "VALUES ('old:in:0', 'conv_old', 1, 'message.input', ?)", (OLD,))
    db.execute("INSERT INTO usage_log (id, request_id, owner_id, operation, status, "
               "created_at) VALUES ('u_old', 'r', 'x', 'chat.complete', 200, ?)", (OLD,))
    for agent, status in (("ag_gone", "deleted"), ("ag_kept", "active")):
        db.execute("INSERT INTO agents (id, owner_id, status, created_at, updated_at) "
                   "VALUES (?, 'x', ?, ?, ?)", (agent, status, OLD, OLD))

    await wait_for(lambda: db.one("conversations", "conv_old") is None, timeout=5)
    await wait_for(lambda: db.one("usage_log", "u_old") is None)
    assert db.entries("conv_old") == []
    assert db.one("agents", "ag_gone") is None and db.one("agents", "ag_kept") is not None
    assert len(db.entries(fresh.conversation_id)) == 2
    assert db.count("SELECT COUNT(*) AS n FROM usage_log") == 1

    # The cut-off follows the clock: 31 days on, the fresh conversation goes too.
    later = RetentionPurger(sidecar.app[DATABASE], 30, 3600, wall=lambda: time.time() + 31 * 86400)
    purged = await later.run_once()
    assert (purged.conversations, purged.entries, purged.usage) == (1, 2, 1)
    assert db.one("conversations", fresh.conversation_id) is None


def test_persistence_needs_the_store_first() -> None:
    (code, _out, err), = cli({"SIDECAR_PLUGINS_CHAIN": "persistence,store"}, ("check-config",))
    assert code == 2 and "persistence needs the store plugin" in err
