"""Plugins marked with pluggy hookimpl options the core does not honour
(``tests.core.option_plugins:NAME``), and one with the options it does."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from proxy import hookimpl
from proxy.context import RequestContext


class OldStyleWrapper:
    """``hookwrapper=True``: pluggy's old-style wrapper."""

    @hookimpl(hookwrapper=True)
    def on_request(self, ctx: RequestContext) -> Generator[None, Any, None]:
        yield


class NewStyleWrapper:
    """``wrapper=True``: pluggy's new-style wrapper."""

    @hookimpl(wrapper=True)
    def on_request(self, ctx: RequestContext) -> Generator[None, Any, Any]:
        return (yield)


class First:
    """``tryfirst=True``."""

    @hookimpl(tryfirst=True)
    def on_end(self, ctx: RequestContext) -> None:
        return None


class Last:
    """``trylast=True``."""

    @hookimpl(trylast=True)
    def on_end(self, ctx: RequestContext) -> None:
        return None


class Honoured:
    """``optionalhook`` and ``specname`` are honoured."""

    @hookimpl(specname="on_end")
    def record(self, ctx: RequestContext) -> None:
        return None

    @hookimpl(optionalhook=True)
    def not_a_hook_of_ours(self) -> None:
        return None


hookwrapper = OldStyleWrapper()
wrapper = NewStyleWrapper()
tryfirst = First()
trylast = Last()
honoured = Honoured()
