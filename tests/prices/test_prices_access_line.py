"""The access line says what each request cost, or that its cost is unknown; a model
without a price is warned about once."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import SidecarFactory
from tests.observability.obs_support import access_lines, sidecar_log


async def test_the_access_line_carries_the_cost_or_says_it_is_unknown(
        start_sidecar: SidecarFactory, tmp_path: Path) -> None:
    log = tmp_path / "logs" / "sidecar.log"
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN="plugins.prices,logs",
                                  SIDECAR_LOG_STDOUT="false", SIDECAR_LOG_FILE=str(log))
    client = sidecar.sdk()
    prompt = [{"role": "user", "content": "one two three"}]
    for request_id, model in (("known", "mistral-small-latest"), ("ghost-1", "ghost-model"),
                              ("ghost-2", "ghost-model")):
        await client.chat.complete_async(model=model, messages=prompt,
                                         http_headers={"X-Request-ID": request_id})
    lines = sidecar_log(sidecar, log)
    access = {line["request_id"]: line for line in access_lines(lines)}
    # 3 prompt tokens at 0.10 and 4 completion tokens at 0.30 per million.
    assert (access["known"]["cost"], access["known"]["currency"]) == ("0.0000015", "USD")
    assert access["ghost-1"]["cost"] == access["ghost-2"]["cost"] == "unknown"
    assert "currency" not in access["ghost-1"]
    told = [line["model"] for line in lines if line.get("event") == "prices.unknown_model"]
    assert told == ["ghost-model"]
