"""The access line's fast encoder writes exactly what the general path writes."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from types import SimpleNamespace

from plugins.logs import ACCESS_LOGGER, access_fields
from plugins.logs.line import AccessLineEncoder
from tests.conftest import MockUpstream, SidecarFactory
from tests.observability.obs_contexts import CONTEXTS
from tests.observability.obs_contexts import PLUGIN as CONTEXTS_PLUGIN
from tests.observability.obs_support import run_traffic
from tests.observability.test_metrics_traffic import CHAIN, obs_env


async def test_fast_lines_equal_the_general_lines_for_every_kind_of_request(
        start_sidecar: SidecarFactory, mock_upstream: MockUpstream, tmp_path: Path) -> None:
    sidecar = await start_sidecar(**obs_env(tmp_path,
                                            SIDECAR_PLUGINS=f"{CHAIN},{CONTEXTS_PLUGIN}"))
    await run_traffic(sidecar, mock_upstream)
    contexts = sidecar.app[CONTEXTS]
    encoder = AccessLineEncoder(ACCESS_LOGGER.name, lambda text: "secret" in text)
    ended = time.time()
    second = int(ended)
    fast_lines = 0
    for ctx in contexts:
        warning = ctx.response_status is not None and ctx.response_status >= 500
        line = encoder.encode(ctx, ended, warning)
        if line is None:
            continue
        fast_lines += 1
        general = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            + f".{int((ended - second) * 1000):03d}Z",
            "level": logging.getLevelName(logging.WARNING if warning else logging.INFO),
            "logger": ACCESS_LOGGER.name, **access_fields(ctx)}
        assert json.loads(line) == general, ctx.request_id
    # the general path is for the unusual line (not ASCII, a suspected secret, a closed
    # connection's missing status), not for ordinary traffic
    assert len(contexts) >= 10 and fast_lines >= 0.8 * len(contexts)


def test_a_suspected_secret_or_text_beyond_ascii_takes_the_general_path() -> None:
    from proxy.context import Identity

    encoder = AccessLineEncoder(ACCESS_LOGGER.name, lambda text: "secret" in text)

    class Ctx:
        """Just what the encoder reads."""

        def __init__(self, model: str, request_id: str = "rid-1") -> None:
            from proxy.context import Timing

            self.response_status = 200
            self.log: dict[str, object] = {"outcome": "ok"}
            self.operation = SimpleNamespace(name="chat.complete")
            self.method, self.path, self.is_stream = "POST", "/v1/chat/completions", False
            self.identity = Identity(key_id="k1", owner="team-a", role="user")
            self.path_params: dict[str, str] = {}
            self.response_json = {"model": model}
            self.resource_ids: dict[str, str] = {}
            self.timing = Timing(started=1.0, finished=1.5)
            self.request_id, self.attempts, self.response_bytes = request_id, 1, 10
            self.upstream_status, self.usage, self.body = 200, None, None

    ended = time.time()
    line = encoder.encode(Ctx("mistral-small"), ended, False)  # type: ignore[arg-type]
    assert line is not None and json.loads(line)["model"] == "mistral-small"
    assert json.loads(line)["duration_ms"] == 500.0
    assert encoder.encode(Ctx("secret-model"), ended, False) is None  # type: ignore[arg-type]
    assert encoder.encode(Ctx("modèle"), ended, False) is None  # type: ignore[arg-type]
    assert encoder.encode(Ctx("m", request_id="a-secret-id"), ended,  # type: ignore[arg-type]
                          False) is None
