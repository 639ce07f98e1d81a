"""One scan per request: every field's text joined, so a phrase split across fields is found.

The texts of a request's fields (:func:`plugins.guard.fields.text_fields`) are joined in
document order with a newline, which the rules read as a space, and the rules run once over
the folded join. Each match is mapped back to the original characters and cut at the field
boundaries: a match inside one field is reported under that field's path, one that spans
several under :data:`JOINED`. Redaction replaces the matched characters in every field the
match touches, so "Please ignore all" + "previous instructions." loses both halves.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field

from plugins.guard.fields import KeyField, TextField
from plugins.guard.normalise import Locator, merge
from plugins.guard.rules import Rule, scan

__all__ = ["JOINED", "SEPARATOR", "Finding", "redact_fields", "scan_fields"]

#: The field reported for a match that spans several fields.
JOINED = "joined"
#: What stands between two fields in the joined text: whitespace, so a space to the rules.
SEPARATOR = "\n"


@dataclass(slots=True)
class Finding:
    """What the rules found in one request."""

    #: ``(rule, field path or JOINED)``, each once, in the order found.
    detections: list[tuple[str, str]] = field(default_factory=list)
    #: Field index -> spans of that field's original text that matched.
    spans: dict[int, list[tuple[int, int]]] = field(default_factory=dict)


def scan_fields(fields: Sequence[TextField], rules: tuple[Rule, ...]) -> Finding:
    """Match ``rules`` against the joined text of ``fields``."""
    finding = Finding()
    if not fields or not rules:
        return finding
    texts = [item.value for item in fields]
    starts: list[int] = []
    offset = 0
    for text in texts:
        starts.append(offset)
        offset += len(text) + len(SEPARATOR)
    joined = SEPARATOR.join(texts)
    folded, found = scan(joined, rules)
    if not found:
        return finding
    locator = Locator(joined, folded)
    seen: set[tuple[str, str]] = set()
    # In document order, whatever the rule: reports name the first thing found first.
    matches = sorted((start, end, rule) for rule, spans in found.items()
                     for start, end in spans)
    for start, end, rule in matches:
        begin, finish = locator.span(start, end)
        touched = _touched(starts, texts, begin, finish)
        if not touched:
            continue
        path = fields[touched[0]].path if len(touched) == 1 else JOINED
        if (rule, path) not in seen:
            seen.add((rule, path))
            finding.detections.append((rule, path))
        for index in touched:
            base = starts[index]
            finding.spans.setdefault(index, []).append(
                (max(begin, base) - base, min(finish, base + len(texts[index])) - base))
    return finding


def _touched(starts: list[int], texts: list[str], begin: int, finish: int) -> list[int]:
    """Indexes of the fields holding a character of ``joined[begin:finish]``."""
    first = max(bisect.bisect_right(starts, begin) - 1, 0)
    touched = []
    for index in range(first, len(texts)):
        base = starts[index]
        if base >= finish:
            break
        if min(finish, base + len(texts[index])) > max(begin, base):
            touched.append(index)
    return touched


def redact_fields(fields: Sequence[TextField], finding: Finding, replacement: str) -> None:
    """Replace each matched span of each field with ``replacement``, in place."""
    # Values first: renaming an object key would leave the fields below it pointing at the
    # old name.
    order = sorted(finding.spans, key=lambda index: isinstance(fields[index], KeyField))
    for index in order:
        text = fields[index].value
        pieces: list[str] = []
        last = 0
        for start, end in merge(finding.spans[index]):
            pieces.append(text[last:start])
            pieces.append(replacement)
            last = end
        pieces.append(text[last:])
        fields[index].replace("".join(pieces))
