"""A hit costs nothing in the token budget and is counted in the metrics."""

from __future__ import annotations

import re

import aiohttp
from cache_support import CHAT, Reply, chat, create_key, start_cached, upstream_calls

from tests.conftest import MockUpstream, SidecarFactory

#: Many words, so one answer costs many tokens (the mock counts words).
LONG = {**CHAT, "messages": [{"role": "user", "content": " ".join(["word"] * 60)}]}


def _tokens_left(reply: Reply) -> int:
    """Tokens left in the caller's budget, as the RateLimit header says before this call."""
    found = re.search(r";r=(\d+)", reply.headers["RateLimit"])
    assert found, reply.headers["RateLimit"]
    return int(found.group(1))


async def test_a_hit_costs_no_tokens_and_is_counted_in_metrics(
    start_sidecar: SidecarFactory, mock_upstream: MockUpstream
) -> None:
    sidecar = await start_cached(
        start_sidecar, chain="metrics,store,auth,ratelimit,cache",
        RATE_LIMIT_REQUESTS="0", SIDECAR_RATELIMIT_TOKENS_PER_MINUTE="1000")
    alice = await create_key(sidecar.env, "alice", "user", "acme")

    first = await chat(sidecar, alice, LONG)
    assert first.headers["X-Sidecar-Cache"] == "miss"
    cost = first.body["usage"]["total_tokens"]
    assert cost >= 100
    hits = [await chat(sidecar, alice, LONG) for _ in range(3)]
    assert all(hit.headers["X-Sidecar-Cache"] == "hit" for hit in hits)
    # The stored answer is given as it was, its usage included ...
    assert all(hit.text == first.text for hit in hits)
    # ... but the budget was debited once, for the call that went upstream.
    assert _tokens_left(hits[0]) <= 1000 - cost + 20
    assert _tokens_left(hits[2]) >= _tokens_left(hits[0])
    assert await upstream_calls(mock_upstream) == 1
    # A miss still costs its tokens.
    sampled = await chat(sidecar, alice, {**LONG, "temperature": 0.5})
    after = await chat(sidecar, alice, LONG)
    assert _tokens_left(after) <= _tokens_left(sampled) - cost + 20

    async with aiohttp.ClientSession() as session, \
            session.get(sidecar.url + "/metrics") as response:
        text = await response.text()
    assert 'mistral_sidecar_events_total{event="cache.hit"} 4.0' in text
    assert 'mistral_sidecar_events_total{event="cache.miss"} 2.0' in text
