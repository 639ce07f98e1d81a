"""Test-only plugins declaring and emitting events as a third party would.

- ``audit`` declares ``acme.audited`` (a counter by verdict; a warning when the verdict is
  ``denied``) and emits it for each request carrying ``X-Acme-Verdict``.
- ``twin`` declares ``acme.audited`` too.
- ``copycat`` declares an event of its own that feeds ``audit``'s family.
- ``misspelt`` makes a reporter of ``acme.audtied``, which nobody declares, at start-up.
- ``rogue`` emits ``acme.undeclared``, which nobody declares, for each request.
- ``sloppy`` returns a name from ``sidecar_events`` instead of a declaration.
- ``needs_audit`` requires ``audit`` earlier in the chain.

Use them as ``SIDECAR_PLUGINS_CHAIN=...,tests.core.declared_event_plugins:audit``.
"""

from __future__ import annotations

from aiohttp import web

from proxy import hookimpl
from proxy.context import RequestContext
from proxy.event_registry import EventMetric, EventSpec, LevelWhen
from proxy.events import emit, emitter

PLUGIN = "tests.core.declared_event_plugins"

AUDITED = EventSpec(
    "acme.audited", "A request was audited.", fields=("verdict",),
    levels=(LevelWhen("verdict", "warning", ("denied",)),),
    metrics=(EventMetric("acme_audits", "Requests audited, by verdict.", ("verdict",)),))


class Audit:
    """Declares ``acme.audited`` and reports it for requests that carry a verdict."""

    @hookimpl
    def sidecar_events(self) -> list[EventSpec]:
        """``acme.audited``."""
        return [AUDITED]

    @hookimpl
    def on_request(self, ctx: RequestContext) -> None:
        """Report the verdict the request carries, if any."""
        verdict = ctx.request.headers.get("X-Acme-Verdict")
        if verdict:
            emit(ctx.app, "acme.audited", ctx, verdict=verdict)


class Twin:
    """Declares the event ``audit`` declares."""

    @hookimpl
    def sidecar_events(self) -> list[EventSpec]:
        """``acme.audited``, again."""
        return [AUDITED]


class Copycat:
    """Feeds another plugin's metric family."""

    @hookimpl
    def sidecar_events(self) -> list[EventSpec]:
        """``copycat.audited``, counted in ``acme_audits``."""
        return [EventSpec("copycat.audited", "A request was audited again.",
                          fields=("verdict",), metrics=AUDITED.metrics)]


class Misspelt:
    """Makes a reporter of an event name with a typo at start-up."""

    @hookimpl
    def startup(self, app: web.Application) -> None:
        """Make the reporter (and fail)."""
        emitter(app, "acme.audtied")


class Rogue:
    """Reports an event nobody declares on each request."""

    @hookimpl
    def on_request(self, ctx: RequestContext) -> None:
        """Report it."""
        emit(ctx.app, "acme.undeclared", ctx, verdict="none")


class Sloppy:
    """Declares an event by its name alone."""

    @hookimpl
    def sidecar_events(self) -> list[str]:
        """Not a list of declarations."""
        return ["acme.audited"]


class NeedsAudit:
    """Needs ``audit`` before it in the chain."""

    requires = (f"{PLUGIN}:audit",)


audit = Audit()
twin = Twin()
copycat = Copycat()
misspelt = Misspelt()
rogue = Rogue()
sloppy = Sloppy()
needs_audit = NeedsAudit()
