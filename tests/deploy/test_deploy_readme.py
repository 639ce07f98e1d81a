"""The configuration reference (docs/configuration.md) is generated from the settings model and
must not drift.

Regenerate the section with ``mistral-sidecar settings --format markdown`` and paste the output
between ``<!-- settings:start -->`` and ``<!-- settings:end -->``.
"""

from __future__ import annotations

import pytest

from proxy.cli import settings_reference
from tests.deploy.deploy_helpers import CONFIGURATION, declared_settings

START = "<!-- settings:start -->"
END = "<!-- settings:end -->"
HOW = "regenerate with `mistral-sidecar settings --format markdown` and paste it between " \
      f"{START} and {END} in docs/configuration.md"


def test_configuration_reference_matches_the_settings_model() -> None:
    assert CONFIGURATION.exists(), "docs/configuration.md is missing"
    text = CONFIGURATION.read_text(encoding="utf-8")
    assert text.count(START) == 1 and text.count(END) == 1, f"no settings section: {HOW}"
    section = text.split(START, 1)[1].split(END, 1)[0].strip()
    declared = declared_settings()
    expected = settings_reference(declared.settings).strip()
    if section != expected:
        documented = {line.split("|")[1].strip() for line in section.splitlines()[2:]
                      if line.startswith("|")}
        actual = {line.split("|")[1].strip() for line in expected.splitlines()[2:]}
        detail = []
        if actual - documented:
            detail.append(f"undocumented: {', '.join(sorted(actual - documented))}")
        if documented - actual:
            detail.append(f"no longer exist: {', '.join(sorted(documented - actual))}")
        pytest.fail(f"configuration reference is out of date "
                    f"({'; '.join(detail) or 'defaults or descriptions changed'}): {HOW}")
