"""The fallback table as an operator writes it: JSON in the environment or YAML in the file;
every mistake reported at start-up, one line each; each model's order of fallbacks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from plugins.fallback.table import FallbackTable, problems
from proxy.loader import load
from proxy.settings import ConfigError
from tests.conftest import MockUpstream, SidecarFactory
from tests.fallback.fallback_support import LARGE, MEDIUM, SMALL, chat, send

ENV = {"MISTRAL_API_KEY": "k", "SIDECAR_PLUGINS_CHAIN": "fallback,retry"}
SOURCE = "fallback.models (SIDECAR_FALLBACK_MODELS)"


def _problems(table: object) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(None, {**ENV, "SIDECAR_FALLBACK_MODELS": json.dumps(table)})
    return caught.value.problems


def test_every_mistake_is_one_line_naming_the_setting() -> None:
    found = _problems({
        LARGE: [MEDIUM, LARGE, MEDIUM],   # itself, and a model twice
        SMALL: [],                        # nothing to fall back to
        "codestral-latest": "codestral-2405",  # not a list
        "mistral-embed": [7],             # not a model name
        "a": ["b"], "b": ["c"], "c": ["a"],  # a cycle
    })
    assert found == [
        f"{SOURCE}: {LARGE}: a model cannot fall back to itself",
        f"{SOURCE}: {LARGE}: {MEDIUM} is listed twice",
        f"{SOURCE}: {SMALL}: must be a non-empty list of models, got []",
        f"{SOURCE}: codestral-latest: must be a non-empty list of models, got 'codestral-2405'",
        f"{SOURCE}: mistral-embed: 7 is not a model name",
        f"{SOURCE}: cycle: a -> b -> c -> a",
    ]


def test_a_table_that_is_not_a_mapping_is_refused() -> None:
    assert _problems([LARGE, MEDIUM]) == [
        f"{SOURCE}: must map each model to the list of models to fall back to, got list"]


def test_invalid_json_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        load(None, {**ENV, "SIDECAR_FALLBACK_MODELS": "{large: medium"})
    assert len(caught.value.problems) == 1
    assert "SIDECAR_FALLBACK_MODELS" in caught.value.problems[0]


def test_two_models_falling_back_to_each_other_is_one_cycle() -> None:
    assert problems({LARGE: [MEDIUM], MEDIUM: [LARGE]}) == [
        f"cycle: {LARGE} -> {MEDIUM} -> {LARGE}"]
    # Sharing a fallback is not a cycle.
    assert problems({LARGE: [SMALL], MEDIUM: [SMALL]}) == []


def test_fallbacks_of_fallbacks_come_after_a_models_own_list() -> None:
    table = FallbackTable({"a": ["b", "c"], "b": ["d", "c"], "d": ["e"]})
    assert table.fallbacks("a") == ("b", "c", "d", "e")
    assert table.fallbacks("b") == ("d", "c", "e")
    assert table.fallbacks("e") == ()
    assert not FallbackTable({})


async def test_the_table_can_come_from_the_yaml_file(start_sidecar: SidecarFactory,
                                                     mock_upstream: MockUpstream,
                                                     tmp_path: Path) -> None:
    config = tmp_path / "sidecar.yaml"
    config.write_text(f"fallback:\n  models:\n    {LARGE}:\n      - {SMALL}\n")
    sidecar = await start_sidecar(config_file=config, SIDECAR_PLUGINS_CHAIN="fallback")
    await mock_upstream.fault(action="respond", status=503, times=-1, model=LARGE)
    reply = await send(sidecar.url, chat(LARGE))
    assert (reply.status, reply.model, reply.body["model"]) == (200, SMALL, SMALL)
