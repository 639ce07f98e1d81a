"""The guard's rules: named regular expressions matched against normalised text.

Rules are written against the normalised view (see :mod:`plugins.guard.normalise`): case
folded, one space between words, no invisible characters. A pattern written in lower case is
compiled as is; one with upper-case letters is compiled case-insensitive (correct, but some
three times slower to scan with). Python's ``re`` has no time limit, so custom rules should
avoid nested quantifiers over the same characters (``(a+)+``); the defaults below run in
linear time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from plugins.guard.normalise import locate, normalise

__all__ = ["DEFAULT_RULES", "Rule", "check_rules", "compile_rules", "redact", "scan"]

#: The deployment guide's three patterns, hardened against spacing tricks.
DEFAULT_RULES: list[dict[str, str]] = [
    {
        # "ignore all previous instructions", "disregard the prior prompt", "forget your
        # earlier rules"; spaces optional so "ignoreallpreviousinstructions" counts too.
        # Not "my previous message": callers correcting themselves are not attacks.
        "name": "prompt_injection",
        "pattern": r"\b(?:ignore|disregard|forget|override)\s*"
                   r"(?:(?:all|any|the|your|of|these|those)\s*)*"
                   r"(?:previous|prior|above|earlier|preceding)\s*"
                   r"(?:instructions?|prompts?|directions?|rules)\b",
    },
    {
        # "reveal your system prompt", "print the full system instructions".
        "name": "system_prompt_exfiltration",
        "pattern": r"\b(?:reveal|show|print|display|repeat|output|leak|dump|tell\s*me)\s*"
                   r"(?:me\s*)?(?:your|the)\s*"
                   r"(?:(?:full|entire|whole|initial|original|hidden|secret)\s*)*"
                   r"system\s*(?:prompt|message|instructions?)\b",
    },
    {
        # An HTML script element (opening or closing) or a script URL scheme.
        "name": "script_injection",
        "pattern": r"<\s*/?\s*script\b|\b(?:java|vb)script\s*:",
    },
]

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
# Escapes (``\S``, ``\N{...}``) and group names are not letters the text must match.
_NOT_LITERAL = re.compile(r"\\N\{[^}]*\}|\\.|\(\?P<\w+>|\(\?P=\w+\)", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Rule:
    """One named pattern."""

    name: str
    pattern: re.Pattern[str]


def check_rules(value: Any) -> str | None:
    """Validate the ``guard.rules`` setting; an error message or ``None``."""
    if not isinstance(value, list):
        return "must be a list of {name, pattern} mappings"
    seen: set[str] = set()
    for index, item in enumerate(value):
        if not isinstance(item, dict) or set(item) != {"name", "pattern"}:
            return f"item {index} must be a mapping with exactly the keys name and pattern"
        name, pattern = item["name"], item["pattern"]
        if not isinstance(name, str) or not _NAME.match(name):
            return f"item {index}: name must be 1-64 letters, digits, '_', '.' or '-'"
        if name in seen:
            return f"rule name {name!r} is used twice"
        seen.add(name)
        if not isinstance(pattern, str) or not pattern:
            return f"rule {name!r}: pattern must be a non-empty string"
        try:
            compiled = re.compile(pattern, _flags(pattern))
        except re.error as exc:
            return f"rule {name!r}: invalid regular expression ({exc})"
        if compiled.fullmatch(""):
            return f"rule {name!r}: pattern matches the empty string"
    return None


def compile_rules(value: list[dict[str, str]]) -> tuple[Rule, ...]:
    """Compile a checked ``guard.rules`` value."""
    return tuple(Rule(item["name"], re.compile(item["pattern"], _flags(item["pattern"])))
                 for item in value)


def _flags(pattern: str) -> int:
    # Normalised text is case folded already: only upper-case literals need IGNORECASE.
    literal = _NOT_LITERAL.sub("", pattern)
    return re.IGNORECASE if any(char.isupper() for char in literal) else 0


def scan(text: str, rules: tuple[Rule, ...]) -> tuple[str, dict[str, list[tuple[int, int]]]]:
    """Match every rule against ``normalise(text)``.

    Returns the normalised text and, per rule that matched, the spans it matched there.
    """
    normalised = normalise(text)
    found: dict[str, list[tuple[int, int]]] = {}
    for rule in rules:
        spans = [match.span() for match in rule.pattern.finditer(normalised)
                 if match.end() > match.start()]
        if spans:
            found[rule.name] = spans
    return normalised, found


def redact(text: str, normalised: str, spans: list[tuple[int, int]], replacement: str) -> str:
    """Replace the original characters behind normalised ``spans`` with ``replacement``."""
    pieces: list[str] = []
    last = 0
    for start, end in locate(text, spans, normalised):
        pieces.append(text[last:start])
        pieces.append(replacement)
        last = end
    pieces.append(text[last:])
    return "".join(pieces)
