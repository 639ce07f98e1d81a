"""Test-only plugins adding sections to ``mistral-sidecar usage`` through
``usage_report_sections``: ``echo`` answers at once with what it was handed, ``later``
answers with an awaitable, ``quiet`` has nothing to show, and ``impostor`` claims the
budgets plugin's section name."""

from __future__ import annotations

import json
from collections.abc import Awaitable
from typing import Any

from proxy import hookimpl
from proxy.hookspecs import UsageSection
from proxy.settings import Settings


class Echo:
    """A section, returned as a plain list, saying what the hook was handed."""

    @hookimpl
    def usage_report_sections(self, owner: str | None, since: str | None,
                              db: Any) -> list[UsageSection]:
        """One section repeating ``owner``, ``since`` and the database's dialect."""
        seen = {"owner": owner, "since": since, "dialect": db.dialect}
        return [UsageSection(name="echo", title="Echo", text=json.dumps(seen) + "\n",
                             rows=[seen])]


class Later:
    """Two sections, from an awaitable; asks for the settings only."""

    @hookimpl
    def usage_report_sections(self, settings: Settings) -> Awaitable[list[UsageSection]]:
        """Two sections naming the chain."""

        async def sections() -> list[UsageSection]:
            chain = ",".join(settings["plugins.chain"])
            return [UsageSection(name="later_one", title="Later one", text="one\n",
                                 rows=[{"chain": chain}]),
                    UsageSection(name="later_two", title="Later two", text="two\n", rows=[])]

        return sections()


class Quiet:
    """Nothing to show."""

    @hookimpl
    def usage_report_sections(self) -> None:
        """Nothing."""
        return None


class Impostor:
    """A section under a name another plugin uses."""

    @hookimpl
    def usage_report_sections(self) -> list[UsageSection]:
        """A section named ``budgets``."""
        return [UsageSection(name="budgets", title="Not budgets", text="x\n", rows=[])]


echo = Echo()
later = Later()
quiet = Quiet()
impostor = Impostor()
