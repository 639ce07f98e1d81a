"""Helpers for the budgets tests: a price table whose prices are easy to add up, the chain,
the CLI, and chat requests through the real SDK that report what a caller sees."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from mistralai.client import Mistral
from mistralai.client.errors import MistralError

from tests.auth.auth_support import CliResult, Key, create_key, run_cli

__all__ = ["CHAIN", "PRICES", "Answer", "CliResult", "Key", "budget_env", "chat",
           "create_key", "run_cli", "seconds_to_midnight", "set_budget"]

#: One US dollar per token in and out: a chat of "hi" (1 prompt token, "Echo: hi" 2
#: completion tokens) costs exactly 3 USD. meter-latest is another name of meter-a.
PRICES = """\
currency: USD
replace: true
models:
  meter-a: {input: 1000000, output: 1000000}
  meter-b: {input: 1000000, output: 1000000}
  free-model: {input: 0, output: 0}
aliases:
  meter-latest: meter-a
"""
#: What one chat of :data:`HI` costs, in USD.
HI_COST = 3
HI = "hi"
#: prices first (it ends requests before budgets read the cost); ratelimit declares the
#: redis.* settings (with its limits off); logs writes events as lines.
CHAIN = "prices,logs,store,auth,ratelimit,budgets"


def budget_env(tmp_path: Path, store_env: dict[str, str], **extra: str) -> dict[str, str]:
    """A sidecar that prices, authenticates and keeps budgets in ``store_env``."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    prices = tmp_path / "prices.yaml"
    prices.write_text(PRICES)
    env = {"SIDECAR_PLUGINS_CHAIN": CHAIN, "SIDECAR_DB_MIGRATE_ON_START": "true",
           "SIDECAR_PRICES_FILE": str(prices), "RATE_LIMIT_REQUESTS": "0",
           "SIDECAR_BUDGETS_REFRESH_SECONDS": "0.1", "LOG_LEVEL": "INFO",
           "SIDECAR_LOG_FILE": str(tmp_path / "sidecar.log")}
    env.update(store_env)
    env.update(extra)
    return env


async def set_budget(env: dict[str, str], *args: str) -> CliResult:
    """``budgets set ARGS``; must succeed."""
    result = await run_cli(env, "budgets", "set", *args)
    assert result.code == 0, result.err
    return result


@dataclass
class Answer:
    """What a caller saw of one request."""

    status: int
    headers: dict[str, str]
    body: Any


async def chat(url: str, key: str, model: str = "meter-a", prompt: str = HI,
               stream: bool = False) -> Answer:
    """One chat completion through the real SDK, streamed or not."""
    client = Mistral(api_key=key, server_url=url)
    messages: Any = [{"role": "user", "content": prompt}]
    try:
        if stream:
            response = await client.chat.stream_async(model=model, messages=messages)
            async for _event in response:
                pass
            return Answer(200, {}, None)
        reply = await client.chat.complete_async(model=model, messages=messages)
    except MistralError as error:
        return Answer(error.status_code, dict(error.headers), json.loads(error.body))
    return Answer(200, {}, reply)


def seconds_to_midnight(now: datetime | None = None) -> float:
    """Seconds from now to the next midnight UTC."""
    now = now or datetime.now(UTC)
    midnight = datetime(now.year, now.month, now.day, tzinfo=UTC) + timedelta(days=1)
    return (midnight - now).total_seconds()


async def post_chat(url: str, key: str, model: str = "meter-a", prompt: str = HI,
                    stream: bool = False) -> Answer:
    """One chat completion over plain HTTP, for the headers of an answer that succeeded."""
    from tests.auth.auth_support import call

    reply = await call(url, "POST", "/v1/chat/completions", key, json={
        "model": model, "stream": stream, "messages": [{"role": "user", "content": prompt}]})
    return Answer(reply.status, dict(reply.headers), reply.body)


async def budgets_in_force(url: str, count: int, timeout: float = 10.0) -> None:
    """Wait until the sidecar at ``url`` applies ``count`` budgets (its ``/readyz``)."""
    import aiohttp

    from tests.conftest import wait_for

    async def applied() -> bool:
        async with aiohttp.ClientSession() as http, http.get(url + "/readyz") as response:
            check = (await response.json())["checks"].get("budgets", {})
            return bool(check.get("budgets") == count)

    await wait_for(applied, timeout=timeout, interval=0.05)


async def readiness(url: str) -> tuple[int, dict[str, Any]]:
    """``/readyz``'s status and its ``budgets`` check."""
    import aiohttp

    async with aiohttp.ClientSession() as http, http.get(url + "/readyz") as response:
        return response.status, (await response.json())["checks"]["budgets"]


async def after_midnight_margin(margin: float = 30.0) -> None:
    """Wait out the last ``margin`` seconds of a UTC day: a test counting one day's spend
    must not see the day change under it."""
    import asyncio

    left = seconds_to_midnight()
    if left < margin:
        await asyncio.sleep(left + 1)
