"""Helpers shared by the model-fallback tests: the chain, the table, raw HTTP and the real SDK
with the response headers it saw."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httpx2
from mistralai.client import Mistral
from mistralai.client.utils import BackoffStrategy, RetryConfig

LARGE = "mistral-large-latest"
MEDIUM = "mistral-medium-latest"
SMALL = "mistral-small-latest"
#: A model with no fallbacks configured.
OTHER = "codestral-latest"

#: Fallback before retry (the outer wrapper sees what retries gave up on); the recorder keeps
#: every event.
PLUGINS = "fallback,retry,tests.support.event_recorder"
CHAT_PATH = "/v1/chat/completions"
MODEL_HEADER = "X-Sidecar-Model"


def fallback_env(table: dict[str, list[str]] | None = None, /, **extra: str) -> dict[str, str]:
    """Environment of a sidecar with fallback on: by default large -> medium -> small, two
    attempts per model and hardly any backoff."""
    env = {
        "SIDECAR_PLUGINS_CHAIN": PLUGINS,
        "SIDECAR_FALLBACK_MODELS": json.dumps(
            table if table is not None else {LARGE: [MEDIUM, SMALL]}),
        "SIDECAR_RETRY_MAX_ATTEMPTS": "2",
        "SIDECAR_RETRY_BASE_INTERVAL_SECONDS": "0.001",
    }
    env.update(extra)
    return env


def user(text: str) -> Any:
    """SDK messages: one user message (a plain dict, as the SDK accepts)."""
    return [{"role": "user", "content": text}]


def reply_text(answer: Any) -> str:
    """The text of the first choice of an SDK chat answer."""
    return str(answer.choices[0].message.content)


def chat(model: str, text: str = "hello", **extra: Any) -> dict[str, Any]:
    """A chat completion request body."""
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


@dataclass
class Reply:
    """One raw HTTP exchange with the sidecar."""

    status: int
    headers: dict[str, str]
    body: Any
    seconds: float

    @property
    def model(self) -> str | None:
        """The ``X-Sidecar-Model`` header, if any."""
        return self.headers.get(MODEL_HEADER)

    @property
    def attempts(self) -> int:
        """The retry plugin's ``X-Sidecar-Attempts``: requests sent upstream in all."""
        return int(self.headers["X-Sidecar-Attempts"])


async def send(url: str, payload: Any, path: str = CHAT_PATH) -> Reply:
    """POST one JSON request and read the whole answer (parsed when it is JSON)."""
    started = time.monotonic()
    async with aiohttp.ClientSession() as session, session.post(
            url + path, json=payload, headers={"Authorization": "Bearer caller-key"}
    ) as response:
        body: Any = (await response.json() if response.content_type == "application/json"
                     else await response.read())
        return Reply(response.status, dict(response.headers), body, time.monotonic() - started)


@dataclass
class HeaderLog:
    """The response headers of every request the SDK made, oldest first."""

    seen: list[httpx2.Headers] = field(default_factory=list)

    @property
    def last(self) -> httpx2.Headers:
        """The headers of the last response."""
        return self.seen[-1]


@asynccontextmanager
async def sdk(url: str) -> AsyncIterator[tuple[Mistral, HeaderLog]]:
    """The real SDK pointed at the sidecar, its own retries off (what is measured is the
    sidecar), and the response headers it received."""
    log = HeaderLog()

    async def keep(response: httpx2.Response) -> None:
        log.seen.append(response.headers)

    off = RetryConfig("none", BackoffStrategy(1, 1, 1.0, 1), False)
    async with httpx2.AsyncClient(event_hooks={"response": [keep]}) as http:
        client = Mistral(api_key="caller-key", server_url=url, retry_config=off,
                         async_client=http)
        yield client, log


def faulted(records: list[dict[str, Any]], fault_id: str) -> int:
    """How many of the mock's requests the fault ``fault_id`` answered."""
    return sum(1 for record in records if record["fault"] == fault_id)
