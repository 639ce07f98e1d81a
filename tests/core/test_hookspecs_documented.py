"""Every hook is documented and exercised (datasette keeps the same promise): a hook without
a docstring, or that no test implements, fails here."""

from __future__ import annotations

import inspect
import re

import pytest

from proxy import hookspecs
from tests.conftest import REPO

HOOKS = sorted(
    name for name, function in inspect.getmembers(hookspecs, inspect.isfunction)
    if hasattr(function, "mistral_sidecar_spec"))
TEST_SOURCES = "\n".join(path.read_text() for path in (REPO / "tests").rglob("*.py"))


def test_the_hooks_are_found() -> None:
    assert {"on_request", "wrap_upstream", "on_end", "startup"} <= set(HOOKS)


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented(hook: str) -> None:
    doc = inspect.getdoc(getattr(hookspecs, hook)) or ""
    assert len(doc.splitlines()) >= 2, f"{hook} needs a docstring that says what it is for"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_implemented_by_a_test_plugin(hook: str) -> None:
    assert re.search(rf"def {hook}\(", TEST_SOURCES), (
        f"no test implements {hook}: add one to a test plugin (tests/core/sample_plugins.py)")
