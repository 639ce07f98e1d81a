"""The output guard: secrets and personal data in the model's answers, redacted or reported.

Answers of chat, FIM and agent completions and of conversation start, append and restart
are searched, in the model's text only (message and entry ``content``, text and thinking
chunks, tool-call and function-call ``arguments``), for the patterns of
``output_guard.patterns`` (defaults: :data:`DEFAULT_PATTERNS`: API keys, tokens, private keys,
card numbers passing the Luhn check, e-mail addresses). ``output_guard.mode``:

- ``redact``: a non-streamed answer is buffered (``ctx.buffer_response``) and each match is
  replaced by ``output_guard.replacement`` (``{name}`` there becomes the pattern's name)
  before the caller gets it;
- ``log``: answers go out unchanged.

Streams are never delayed, so they are only reported, in either mode, from the answer the
core reassembles for ``on_end``. Every (pattern, field) found is reported as event
``output_guard.detection`` {pattern, field, count, action: redacted|logged} and a WARNING
line of ``mistral_sidecar.output_guard``, never with the text. Upstream is asked for
uncompressed answers of these operations so they can be read; should it compress one anyway
in redact mode, the answer is refused (502 ``output_guard_uninspectable``) rather than passed
on unread.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from proxy import hookimpl
from proxy.app import SETTINGS
from proxy.context import RequestContext, UpstreamResponse
from proxy.errors import SidecarError
from proxy.event_registry import EventSpec
from proxy.events import emit
from proxy.settings import Setting

__all__ = ["DEFAULT_PATTERNS", "OUTPUT_GUARD", "OutputGuard", "Pattern", "check_patterns",
           "luhn_valid"]

logger = logging.getLogger("mistral_sidecar.output_guard")

MODES = ("redact", "log")

#: Operations (``_stream`` twins included) whose answers hold model output.
GUARDED_OPERATIONS = frozenset({
    "chat.complete", "fim.complete", "agents.complete",
    "conversations.start", "conversations.append", "conversations.restart",
})

#: Precise patterns only: each has a shape ordinary prose does not take. Quantifiers are
#: bounded so that no text makes a pattern scan it more than linearly.
DEFAULT_PATTERNS: list[dict[str, Any]] = [
    # OpenAI/Anthropic-style secret keys: sk-..., sk-proj-..., sk-ant-api03-...
    {"name": "api_key", "pattern": r"\bsk-[A-Za-z0-9_-]{16,200}"},
    # Mistral keys: 32 letters and digits, mixed case with a digit (a lower-case hex digest
    # or a word is not one).
    {"name": "mistral_api_key",
     "pattern": r"\b(?=[A-Za-z0-9]{32}\b)(?=[a-z0-9]*[A-Z])(?=[A-Z0-9]*[a-z])"
                r"(?=[A-Za-z]*[0-9])[A-Za-z0-9]{32}\b"},
    {"name": "github_token",
     "pattern": r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})\b"},
    {"name": "aws_access_key", "pattern": r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"},
    {"name": "private_key",
     "pattern": r"-----BEGIN (?:[A-Z0-9]+ ){0,3}PRIVATE KEY-----"
                r"(?:[A-Za-z0-9+/=\s:,-]{0,20000}?-----END (?:[A-Z0-9]+ ){0,3}PRIVATE KEY-----)?"},
    # 13 to 19 digits, single spaces or hyphens allowed between them, kept only when the
    # Luhn check passes.
    {"name": "card_number", "pattern": r"(?<![\d-])[2-6]\d{3}(?:[ -]?\d){9,15}(?!\d)",
     "luhn": True},
    {"name": "email",
     "pattern": r"\b[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){0,8}"
                r"\.[A-Za-z]{2,24}\b"},
]

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass(frozen=True, slots=True)
class Pattern:
    """One named pattern; ``luhn`` keeps only matches whose digits pass the Luhn check."""

    name: str
    regex: re.Pattern[str]
    luhn: bool = False

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Where the pattern matches ``text``."""
        return [match.span() for match in self.regex.finditer(text)
                if not self.luhn or luhn_valid(match.group())]


@dataclass(frozen=True, slots=True)
class OutputGuard:
    """The compiled patterns and what to do with a match."""

    mode: str
    patterns: tuple[Pattern, ...]
    replacement: str


OUTPUT_GUARD = web.AppKey("output_guard", OutputGuard)
_STATE = "output_guard"


def luhn_valid(candidate: str) -> bool:
    """Whether the digits of ``candidate`` pass the Luhn check (card numbers do)."""
    digits = [int(ch) for ch in candidate if ch.isdigit()]
    if len(digits) < 2:
        return False
    total = 0
    for position, digit in enumerate(reversed(digits)):
        if position % 2:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def check_patterns(value: Any) -> str | None:
    """Validate the ``output_guard.patterns`` setting; an error message or ``None``."""
    if not isinstance(value, list):
        return "must be a list of {name, pattern, luhn?} mappings"
    seen: set[str] = set()
    for index, item in enumerate(value):
        if not isinstance(item, dict) or not {"name", "pattern"} <= set(item) \
                or not set(item) <= {"name", "pattern", "luhn"}:
            return f"item {index} must be a mapping with keys name, pattern and optional luhn"
        name, pattern = item["name"], item["pattern"]
        if not isinstance(name, str) or not _NAME.match(name):
            return f"item {index}: name must be 1-64 letters, digits, '_', '.' or '-'"
        if name in seen:
            return f"pattern name {name!r} is used twice"
        seen.add(name)
        if not isinstance(pattern, str) or not pattern:
            return f"pattern {name!r}: pattern must be a non-empty string"
        try:
            re.compile(pattern)
        except re.error as exc:
            return f"pattern {name!r}: invalid regular expression ({exc})"
        if not isinstance(item.get("luhn", False), bool):
            return f"pattern {name!r}: luhn must be true or false"
    return None


def compile_patterns(value: list[dict[str, Any]]) -> tuple[Pattern, ...]:
    """The checked ``output_guard.patterns`` setting, compiled."""
    return tuple(Pattern(item["name"], re.compile(item["pattern"]), bool(item.get("luhn")))
                 for item in value)


# --- where the model's text is in an answer ------------------------------------------------


@dataclass(slots=True)
class _Slot:
    """A string of the answer: ``container[key]``, named ``path`` in reports."""

    container: Any
    key: Any
    path: str


def _content(holder: dict[str, Any], key: str, path: str) -> Iterator[_Slot]:
    value = holder.get(key)
    if isinstance(value, str):
        yield _Slot(holder, key, path)
    elif isinstance(value, list):
        for index, chunk in enumerate(value):
            if not isinstance(chunk, dict):
                continue
            if isinstance(chunk.get("text"), str):
                yield _Slot(chunk, "text", f"{path}[{index}].text")
            if isinstance(chunk.get("thinking"), list):
                yield from _content(chunk, "thinking", f"{path}[{index}].thinking")


def _arguments(holder: dict[str, Any], path: str) -> Iterator[_Slot]:
    if isinstance(holder.get("arguments"), str):
        yield _Slot(holder, "arguments", f"{path}.arguments")


def answer_slots(body: Any) -> Iterator[_Slot]:
    """The model's strings in a completion or conversation answer, in document order."""
    if not isinstance(body, dict):
        return
    for index, choice in enumerate(body.get("choices") or ()):
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            continue
        path = f"choices[{index}].message"
        yield from _content(message, "content", f"{path}.content")
        for number, call in enumerate(message.get("tool_calls") or ()):
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                yield from _arguments(function, f"{path}.tool_calls[{number}].function")
    for index, entry in enumerate(body.get("outputs") or ()):
        if isinstance(entry, dict):
            yield from _content(entry, "content", f"outputs[{index}].content")
            yield from _arguments(entry, f"outputs[{index}]")


# --- scanning ------------------------------------------------------------------------------


def _redacted(text: str, spans: list[tuple[str, int, int]], replacement: str) -> str:
    """``text`` with each span replaced; overlapping spans merged, the first name kept."""
    out: list[str] = []
    position = 0
    for name, start, end in sorted(spans, key=lambda span: (span[1], -span[2])):
        if end <= position:
            continue
        start = max(start, position)
        if start > position or not out:
            out.append(text[position:start])
            out.append(replacement.replace("{name}", name))
        position = end
    out.append(text[position:])
    return "".join(out)


def _scan(ctx: RequestContext, guard: OutputGuard, body: Any, redact: bool) -> bool:
    """Search ``body``; report what is found, redact it when ``redact``. Whether anything
    was found."""
    found: list[tuple[str, str, int]] = []
    for slot in answer_slots(body):
        text = slot.container[slot.key]
        spans: list[tuple[str, int, int]] = []
        for pattern in guard.patterns:
            matched = pattern.spans(text)
            if matched:
                spans.extend((pattern.name, start, end) for start, end in matched)
                found.append((pattern.name, slot.path, len(matched)))
        if spans and redact:
            slot.container[slot.key] = _redacted(text, spans, guard.replacement)
    if not found:
        return False
    action = "redacted" if redact else "logged"
    for name, path, count in found:
        emit(ctx.app, "output_guard.detection", ctx, pattern=name, field=path, count=count,
             action=action)
        logger.warning("output guard: pattern %s found %d time(s) in %s (%s, request %s)",
                       name, count, path, action, ctx.request_id)
    ctx.log["output_guard"] = sorted({name for name, _, _ in found})
    return True


def _guarded(ctx: RequestContext) -> bool:
    operation = ctx.operation
    return operation is not None and \
        operation.name.removesuffix("_stream") in GUARDED_OPERATIONS


# --- hooks ---------------------------------------------------------------------------------


#: The events this plugin emits.
EVENTS = (
    EventSpec("output_guard.detection", "An output-guard pattern was found in a response.",
              fields=("pattern", "field", "count", "action")),
)


@hookimpl
def sidecar_events() -> list[EventSpec]:
    """The events this plugin emits."""
    return list(EVENTS)


@hookimpl
def sidecar_settings() -> list[Setting]:
    """Switch, mode, patterns and replacement."""
    return [
        Setting("output_guard.enabled", "bool", False,
                "Search the model's answers for secrets and personal data."),
        Setting("output_guard.mode", "str", "redact",
                "redact: replace what matches in non-streamed answers (streams are only "
                "logged); log: report only.", choices=MODES),
        Setting("output_guard.patterns", "data", DEFAULT_PATTERNS,
                "Patterns as a list of {name, pattern, luhn} (Python regular expressions, "
                "case-sensitive; luhn: true keeps only matches whose digits pass the Luhn "
                "check).", check=check_patterns),
        Setting("output_guard.replacement", "str", "[REDACTED]",
                "Text that replaces each match in redact mode; {name} becomes the pattern's "
                "name."),
    ]


@hookimpl
def startup(app: web.Application) -> None:
    """Compile the patterns once (nothing when disabled)."""
    settings = app[SETTINGS]
    if not settings["output_guard.enabled"]:
        return
    app[OUTPUT_GUARD] = OutputGuard(
        mode=str(settings["output_guard.mode"]),
        patterns=compile_patterns(settings["output_guard.patterns"]),
        replacement=str(settings["output_guard.replacement"]),
    )


@hookimpl
def on_request(ctx: RequestContext) -> None:
    """Ask upstream for a readable answer; buffer non-streamed answers in redact mode."""
    guard = ctx.app.get(OUTPUT_GUARD)
    if guard is None or not guard.patterns or not _guarded(ctx):
        return
    ctx.upstream_headers["Accept-Encoding"] = "identity"
    if guard.mode == "redact" and not ctx.is_stream:
        ctx.buffer_response = True
        ctx.state[_STATE] = "buffered"


@hookimpl
def on_response(ctx: RequestContext, response: UpstreamResponse) -> None:
    """Refuse, in redact mode, a successful JSON answer upstream compressed anyway: it could
    not be searched."""
    if ctx.state.get(_STATE) != "buffered" or not 200 <= response.status < 300:
        return
    content_type = response.headers.get("Content-Type", "")
    encoding = response.headers.get("Content-Encoding", "identity").lower()
    if "json" in content_type and encoding != "identity":
        raise SidecarError(502, "Upstream sent a compressed answer the output guard cannot "
                           "inspect.", type="upstream_error", code="output_guard_uninspectable")


@hookimpl
def rewrite_response(ctx: RequestContext, body: Any) -> Any:
    """Redact the non-streamed answer."""
    if ctx.state.get(_STATE) != "buffered":
        return None
    ctx.state[_STATE] = "scanned"
    status = ctx.response_status or 0
    if not 200 <= status < 300:
        return None
    return body if _scan(ctx, ctx.app[OUTPUT_GUARD], body, redact=True) else None


@hookimpl
def on_end(ctx: RequestContext) -> None:
    """Report what streams and log-mode answers carried (redacted answers are done)."""
    guard = ctx.app.get(OUTPUT_GUARD)
    if guard is None or ctx.state.get(_STATE) == "scanned" or not _guarded(ctx):
        return
    status = ctx.response_status or 0
    if 200 <= status < 300:
        _scan(ctx, guard, ctx.response_json, redact=False)
