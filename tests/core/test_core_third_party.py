"""A third party's plugin declares settings, checks them, adds a command and metrics."""

from __future__ import annotations

import os
import subprocess
import sys

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import REPO, SidecarFactory

PLUGIN = "tests.core.third_party_plugin"


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("SIDECAR_", "MISTRAL_", "DB_", "REDIS_"))}
    return subprocess.run([sys.executable, "-m", "proxy.cli", *args],
                          env={**clean, "SIDECAR_PLUGINS_CHAIN": f"metrics,{PLUGIN}", **env},
                          capture_output=True, text=True, cwd=REPO, timeout=60)


def test_its_setting_its_check_and_its_command() -> None:
    assert _cli("acme-hello", SIDECAR_ACME_GREETING="bonjour").stdout.strip() == "bonjour"
    blank = _cli("check-config", SIDECAR_ACME_GREETING="  ")
    assert blank.returncode == 2
    assert "acme.greeting (SIDECAR_ACME_GREETING): must not be blank" in blank.stderr


async def test_its_metrics_join_the_exposition(start_sidecar: SidecarFactory) -> None:
    sidecar = await start_sidecar(SIDECAR_PLUGINS_CHAIN=f"metrics,{PLUGIN}")
    async with aiohttp.ClientSession() as http, http.get(sidecar.url + "/metrics") as resp:
        text = await resp.text()
    families = {family.name: family for family in text_string_to_metric_families(text)}
    assert families["acme_up"].samples[0].value == 1
