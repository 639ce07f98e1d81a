"""What requests cost, end to end: a known workload through the real SDK, then
``mistral-sidecar usage`` and ``/metrics`` show the cost the price table gives, to the
billionth; streams are charged from their usage chunk; a model without a price costs
"unknown", never a guess. On SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from proxy.settings import ConfigError
from tests.auth.auth_support import create_key, run_cli
from tests.conftest import SidecarFactory, wait_for
from tests.observability.obs_support import scrape
from tests.persistence.persistence_helpers import StoreReader

SHIPPED = Path(__file__).resolve().parents[2] / "plugins" / "prices" / "mistral-prices.yaml"
CHAIN = "plugins.prices,store,auth,persistence,metrics"
#: The operator's own fine-tune, priced in the operator's file (per million tokens).
OWN_FILE = "models:\n  acme-ft: {input: 1000, output: 3000}\n"
MILLION = Decimal(1_000_000)
WORDS = 500


def env(store_env: dict[str, str], tmp_path: Path, **extra: str) -> dict[str, str]:
    """A sidecar that prices, authenticates and records into ``store_env``."""
    own = tmp_path / "own-prices.yaml"
    own.write_text(OWN_FILE)
    return {"SIDECAR_PLUGINS_CHAIN": CHAIN, "SIDECAR_DB_MIGRATE_ON_START": "true",
            "SIDECAR_PERSISTENCE_FLUSH_INTERVAL_SECONDS": "0.02", "SIDECAR_PRICES_FILE": str(own),
            **store_env, **extra}


def listed(model: str) -> tuple[Decimal, Decimal]:
    """Input and output price per million tokens of ``model`` in the shipped file, read as
    plain YAML (an alias followed by hand)."""
    table = yaml.safe_load(SHIPPED.read_text())
    entry = table["models"][table["aliases"].get(model, model)]
    return Decimal(str(entry["input"])), Decimal(str(entry["output"]))


def today() -> str:
    return datetime.now(UTC).date().isoformat()


async def test_usage_by_model_and_day_shows_the_cost_the_table_gives(
        start_sidecar: SidecarFactory, store_env: dict[str, str], tmp_path: Path) -> None:
    first_day = today()
    sidecar = await start_sidecar(**env(store_env, tmp_path))
    alice = await create_key(sidecar.env, "alice", "user", "acme")
    bob = await create_key(sidecar.env, "bob", "user", "beta")
    as_alice, as_bob = sidecar.sdk(api_key=alice.key), sidecar.sdk(api_key=bob.key)
    long_prompt = [{"role": "user", "content": " ".join(["word"] * WORDS)}]
    short_prompt = [{"role": "user", "content": "one two three"}]

    # The workload. The mock counts words: a prompt of N words answers "Echo: <N words>".
    for _ in range(3):
        await as_alice.chat.complete_async(model="mistral-large-latest", messages=long_prompt)
    stream = await as_alice.chat.stream_async(model="mistral-large-latest",
                                              messages=long_prompt)
    async for _event in stream:
        pass
    for _ in range(2):
        await as_bob.embeddings.create_async(model="mistral-embed", inputs=["a b c", "d e"])
        await as_bob.chat.complete_async(model="acme-ft", messages=short_prompt)
        await as_bob.chat.complete_async(model="ghost-model", messages=short_prompt)
    db = StoreReader(sidecar.env)
    await wait_for(lambda: db.count("SELECT COUNT(*) AS n FROM usage_log") == 10)

    by_model_day, table, by_org, by_owner_key = [
        await run_cli(sidecar.env, "usage", *args) for args in (
            ("--by", "model,day", "--json"), ("--by", "model,day"), ("--by", "org", "--json"),
            ("--by", "owner,key", "--json"))]
    assert by_model_day.code == 0, by_model_day.err

    large_in, large_out = listed("mistral-large-latest")
    embed_in, _ = listed("mistral-embed")
    large = 4 * (WORDS * large_in + (WORDS + 1) * large_out) / MILLION
    embed = 2 * 5 * embed_in / MILLION
    own = 2 * (3 * Decimal(1000) + 4 * Decimal(3000)) / MILLION
    rows = {row["model"]: row for row in json.loads(by_model_day.out)}
    assert {row["day"] for row in rows.values()} <= {first_day, today()}
    assert {model: (Decimal(row["cost"]), row["currency"], row["unpriced"], row["requests"])
            for model, row in rows.items() if row["cost"] is not None} == {
        "mistral-large-latest": (large, "USD", 0, 4),
        "mistral-embed": (embed, "USD", 0, 2),
        "acme-ft": (own, "USD", 0, 2),
    }
    # To the cent, as a person adding up the table by hand would.
    assert Decimal(rows["mistral-large-latest"]["cost"]).quantize(Decimal("0.01")) \
        == Decimal("0.02")
    assert (rows["ghost-model"]["cost"], rows["ghost-model"]["currency"],
            rows["ghost-model"]["unpriced"]) == (None, None, 2)

    lines = {line.split()[0]: line.split() for line in table.out.splitlines()}
    assert lines["model"][-3:] == ["cost", "currency", "unpriced"]
    assert lines["ghost-model"][-3:] == ["unknown", "-", "2"]
    assert lines["acme-ft"][-3:] == ["0.030000", "USD", "0"]
    assert lines["TOTAL"][-3:] == ["unknown", "-", "2"]

    orgs = {row["org"]: row for row in json.loads(by_org.out)}
    assert Decimal(orgs["acme"]["cost"]) == large and orgs["acme"]["unpriced"] == 0
    assert orgs["beta"]["cost"] is None and orgs["beta"]["unpriced"] == 2
    keys = {(row["owner_id"], row["key_id"]): row["requests"]
            for row in json.loads(by_owner_key.out)}
    assert keys == {("alice", alice.key_id): 4, ("bob", bob.key_id): 6}

    metrics = await scrape(sidecar.url)
    assert metrics.value("mistral_sidecar_cost_total", model="mistral-large-latest",
                         org="acme") == pytest.approx(float(large))
    assert metrics.value("mistral_sidecar_cost_total", model="acme-ft",
                         org="beta") == pytest.approx(float(own))
    assert metrics.value("mistral_sidecar_unpriced_requests_total", model="ghost-model") == 2
    # The unknown model is told about once, however often it answers.
    assert metrics.value("mistral_sidecar_events_total", event="prices.unknown_model") == 1


async def test_each_usage_row_carries_its_cost_streamed_or_not_conversation_or_not(
        start_sidecar: SidecarFactory, store_env: dict[str, str], tmp_path: Path) -> None:
    sidecar = await start_sidecar(**env(store_env, tmp_path))
    key = await create_key(sidecar.env, "carol", "user", "acme")
    client = sidecar.sdk(api_key=key.key)
    prompt = [{"role": "user", "content": "how much does this cost"}]
    await client.chat.complete_async(model="mistral-small-latest", messages=prompt)
    stream = await client.chat.stream_async(model="mistral-small-latest", messages=prompt)
    async for _event in stream:
        pass
    started = await client.beta.conversations.start_async(model="mistral-small-latest",
                                                          inputs="and this one")
    db = StoreReader(sidecar.env)
    await wait_for(lambda: db.count("SELECT COUNT(*) AS n FROM usage_log") == 3)
    rows: list[dict[str, Any]] = db.rows(
        "SELECT operation, streamed, prompt_tokens, completion_tokens, cost_nanos, currency, "
        "key_id, org FROM usage_log ORDER BY operation, streamed")
    small_in, small_out = listed("mistral-small-latest")

    def nanos(prompt_tokens: int, completion_tokens: int) -> int:
        # Prices per million tokens, in billionths: a thousand per unit of price.
        return int((prompt_tokens * small_in + completion_tokens * small_out) * 1000)

    turn = started.usage
    assert [(r["operation"], r["streamed"], r["prompt_tokens"], r["completion_tokens"],
             r["cost_nanos"], r["currency"], r["key_id"], r["org"]) for r in rows] == [
        ("chat.complete", False, 5, 6, nanos(5, 6), "USD", key.key_id, "acme"),
        ("chat.complete", True, 5, 6, nanos(5, 6), "USD", key.key_id, "acme"),
        ("conversations.start", False, turn.prompt_tokens, turn.completion_tokens,
         nanos(turn.prompt_tokens or 0, turn.completion_tokens or 0), "USD", key.key_id,
         "acme")]
    assert (turn.prompt_tokens or 0) > 0


async def test_prices_must_end_requests_before_the_plugins_that_read_the_cost(
        start_sidecar: SidecarFactory, store_env: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as refused:
        await start_sidecar(**env(store_env, tmp_path,
                                  SIDECAR_PLUGINS_CHAIN="store,auth,persistence,plugins.prices"))
    assert refused.value.problems == [
        "plugins.chain (SIDECAR_PLUGINS_CHAIN): plugins.prices must come before auth, persistence, "
        "which observe the end of requests and would not see its cost (put it first)"]


async def test_a_bad_price_file_stops_check_config_with_a_line_per_problem(
        tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  a: {input: 1}\n  b: {input: 1, output: free}\n")
    result = await run_cli({"SIDECAR_PLUGINS_CHAIN": "plugins.prices",
                            "SIDECAR_PRICES_FILE": str(bad)}, "check-config")
    assert result.code == 2
    assert [line for line in result.err.splitlines() if "configuration error" in line] == [
        f"mistral-sidecar: configuration error: prices.file (SIDECAR_PRICES_FILE) {bad} "
        "line 2: models.a: input and output are priced together (0 for what a model does "
        "not charge)",
        f"mistral-sidecar: configuration error: prices.file (SIDECAR_PRICES_FILE) {bad} "
        "line 3: models.b.output: expected a price (a number from 0 to 1000000), got 'free'"]
