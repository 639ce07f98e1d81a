"""The input guard: finds attacks on the model in the text of a request before upstream.

Every string of the request a model reads (see :mod:`plugins.guard.fields`, generated from the
OpenAPI spec) is folded (see :mod:`plugins.guard.normalise`: look-alike letters, invisible
characters, marks and odd spacing undone) and matched against the configured rules
(``guard.rules``; defaults in :mod:`plugins.guard.default_rules`), field by field and across
fields at once (see :mod:`plugins.guard.request_scan`). What happens on a match depends on
``guard.mode``:

- ``redact`` (default): the matched characters of the caller's original text are replaced
  with ``guard.replacement`` (in every field a match spans) and the changed body goes
  upstream; otherwise the body goes upstream byte for byte as the caller sent it;
- ``block``: the request is answered 400 naming the rule(s) and field(s), never the text;
- ``log``: the body goes upstream unchanged.

In every mode each (rule, field) detection is reported as a ``guard.detection`` event
``{rule, field, mode}`` and logged at WARNING by ``mistral_sidecar.guard``, without the text;
a match spanning several fields is reported with the field ``joined``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aiohttp import web

from plugins.guard.fields import text_fields
from plugins.guard.folding import table
from plugins.guard.request_scan import JOINED, redact_fields, scan_fields
from plugins.guard.rules import DEFAULT_RULES, Rule, check_rules, compile_rules
from proxy import hookimpl
from proxy.app import SETTINGS
from proxy.context import RequestContext
from proxy.errors import SidecarError
from proxy.event_registry import EventMetric, EventSpec
from proxy.events import emit
from proxy.settings import Setting

__all__ = ["GUARD_CONFIG", "MODES", "GuardConfig"]

logger = logging.getLogger("mistral_sidecar.guard")

MODES = ("redact", "block", "log")


@dataclass(frozen=True, slots=True)
class GuardConfig:
    """The compiled rules and what to do on a match."""

    mode: str
    rules: tuple[Rule, ...]
    replacement: str


GUARD_CONFIG = web.AppKey("guard_config", GuardConfig)


#: The events this plugin emits.
EVENTS = (
    EventSpec("guard.detection", "An input-guard rule matched a request field.",
              fields=("rule", "field", "mode"), level="WARNING",
              metrics=(EventMetric("guard_detections",
                                   "Input-guard detections, by rule and mode.",
                                   ("rule", "mode")),)),
)


@hookimpl
def sidecar_events() -> list[EventSpec]:
    """The events this plugin emits."""
    return list(EVENTS)


@hookimpl
def sidecar_settings() -> list[Setting]:
    """Mode, rules and replacement text."""
    return [
        Setting("guard.mode", "str", "redact",
                "What a rule match does: redact the matched text, block the request (400), "
                "or log only.", choices=MODES),
        Setting("guard.rules", "data", DEFAULT_RULES,
                "Rules as a list of {name, pattern} (Python regular expressions, matched "
                "against folded text: NFKD, case folded, marks and invisible characters "
                "removed, look-alike letters replaced by their Unicode confusable prototype, "
                "punctuation between words read as a space; literal characters of a pattern "
                "are folded the same way). The defaults catch prompt injection and "
                "system-prompt exfiltration in several languages.", check=check_rules),
        Setting("guard.replacement", "str", "[REDACTED]",
                "Text that replaces each matched span in redact mode."),
    ]


@hookimpl
def startup(app: web.Application) -> None:
    """Compile the rules and build the folding table once, before the first request."""
    table()
    settings = app[SETTINGS]
    app[GUARD_CONFIG] = GuardConfig(
        mode=str(settings["guard.mode"]),
        rules=compile_rules(settings["guard.rules"]),
        replacement=str(settings["guard.replacement"]),
    )


@hookimpl
def on_request(ctx: RequestContext) -> None:
    """Scan the request's text; redact, block or just report what matches."""
    config = ctx.app[GUARD_CONFIG]
    if ctx.operation is None or not config.rules:
        return
    body = ctx.json
    fields = list(text_fields(ctx.operation.name, body))
    finding = scan_fields(fields, config.rules)
    if not finding.detections:
        return
    for rule, path in finding.detections:
        emit(ctx.app, "guard.detection", ctx, rule=rule, field=path, mode=config.mode)
        logger.warning("input guard: rule %s matched in %s (mode %s, request %s)",
                       rule, path, config.mode, ctx.request_id)
    ctx.log["guard_rules"] = sorted({rule for rule, _ in finding.detections})
    ctx.log["guard_mode"] = config.mode
    if config.mode == "block":
        raise SidecarError(400, _blocked_message(finding.detections),
                           code="input_guard_blocked")
    if config.mode == "redact":
        redact_fields(fields, finding, config.replacement)
        ctx.set_json(body)


def _blocked_message(detections: list[tuple[str, str]]) -> str:
    rules = list(dict.fromkeys(rule for rule, _ in detections))
    paths = list(dict.fromkeys("text spread over several fields" if path == JOINED else path
                               for _, path in detections))
    named = ", ".join(f"'{rule}'" for rule in rules)
    where = paths[0] if len(paths) == 1 else f"{paths[0]} and {len(paths) - 1} other field(s)"
    plural = "s" if len(rules) > 1 else ""
    return f"The request was refused by the input guard: rule{plural} {named} matched in {where}."
