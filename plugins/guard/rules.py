"""The guard's rules: named regular expressions matched against folded text.

Rules are matched against the folded view of the request's text (see
:mod:`plugins.guard.normalise`): case folded, accents and other marks removed, look-alike
letters replaced by their prototypes, invisible characters removed, one space between words
and punctuation between two words read as a space. The literal characters of a pattern are
folded the same way before it is compiled (:mod:`plugins.guard.pattern_fold`), so a rule is
written as a reader would spell it, in any script. What remains upper case after folding
(``[A-Z]``) is matched case-insensitively. Python's ``re`` has no time limit, so custom rules
should avoid nested quantifiers over the same characters (``(a+)+``); the defaults
(:mod:`plugins.guard.default_rules`) run in linear time.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from plugins.guard.default_rules import DEFAULT_RULES, TRIGGERS
from plugins.guard.normalise import fold_characters, locate, normalise
from plugins.guard.pattern_fold import fold_pattern

__all__ = ["DEFAULT_RULES", "Rule", "check_rules", "compile_rules", "redact", "scan"]

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
# Escapes (``\S``, ``\N{...}``) and group names are not letters the text must match.
_NOT_LITERAL = re.compile(r"\\N\{[^}]*\}|\\.|\(\?P<\w+>|\(\?P=\w+\)", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Rule:
    """One named pattern, with the words every match starts with when they are known.

    ``bounded`` finds words a match may start with only at the start of a word, ``free``
    words it may start with anywhere (scripts written without spaces).
    """

    name: str
    pattern: re.Pattern[str]
    bounded: re.Pattern[str] | None = None
    free: re.Pattern[str] | None = None

    def spans(self, folded: str) -> list[tuple[int, int]]:
        """The non-empty spans this rule matches in ``folded`` text, left to right and not
        overlapping (what ``finditer`` would give)."""
        if self.bounded is None and self.free is None:
            return [m.span() for m in self.pattern.finditer(folded) if m.end() > m.start()]
        found: list[tuple[int, int]] = []
        position = 0
        for start in self._starts(folded):
            if start < position:
                continue
            match = self.pattern.match(folded, start)
            if match is not None and match.end() > match.start():
                found.append(match.span())
                position = match.end()
        return found

    def may_match(self, characters: str) -> bool:
        """Whether this rule can match the text whose folded characters are
        ``characters`` (:func:`~plugins.guard.normalise.fold_characters`): no word a match
        starts with, no match. Rules without known start words always may."""
        if self.bounded is None and self.free is None:
            return True
        return bool((self.bounded is not None and self.bounded.search(characters))
                    or (self.free is not None and self.free.search(characters)))

    def _starts(self, folded: str) -> list[int]:
        starts: set[int] = set()
        if self.bounded is not None:
            # A word found inside another word cannot start a match; a word cannot hold the
            # start of another one either, so non-overlapping matches miss nothing.
            starts.update(m.start() for m in self.bounded.finditer(folded))
        if self.free is not None:
            position = 0
            while (hit := self.free.search(folded, position)) is not None:
                starts.add(hit.start())
                position = hit.start() + 1
        return sorted(starts)


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
            compiled = _compile(pattern)
        except re.error as exc:
            return f"rule {name!r}: invalid regular expression ({exc})"
        except ValueError as exc:
            return f"rule {name!r}: {exc}"
        if compiled.fullmatch(""):
            return f"rule {name!r}: pattern matches the empty string"
    return None


def compile_rules(value: list[dict[str, str]]) -> tuple[Rule, ...]:
    """Compile a checked ``guard.rules`` value."""
    rules = []
    for item in value:
        bounded, free = TRIGGERS.get(item["pattern"], ((), ()))
        rules.append(Rule(item["name"], _compile(item["pattern"]),
                          _words(bounded, at_word_start=True), _words(free)))
    return tuple(rules)


def _words(words: Iterable[str], at_word_start: bool = False) -> re.Pattern[str] | None:
    folded = [normalise(word) for word in words]
    if not folded:
        return None
    # Only at the start of a word: the engine then tries the words at a few hundred places
    # of a prompt rather than at every character.
    return re.compile(("(?<![^\\W_])" if at_word_start else "") + _trie(folded))


def _trie(words: Iterable[str]) -> str:
    """A regular expression matching any of ``words``, nested by common prefix: ``re`` then
    compares a handful of first characters at each position instead of every word."""
    tree: dict[str, Any] = {}
    for word in words:
        node = tree
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}

    def render(node: dict[str, Any]) -> str:
        branches = [re.escape(char) + render(child) for char, child in sorted(node.items())
                    if char]
        if "" in node:
            # A word ends here: what follows is optional, and the shortest match will do.
            return ""
        return branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"

    return render(tree)


@functools.lru_cache(maxsize=64)
def _compile(pattern: str) -> re.Pattern[str]:
    # The unfolded pattern must be valid too: folding assumes well-formed syntax.
    re.compile(pattern)
    folded = fold_pattern(pattern)
    return re.compile(folded, _flags(folded))


def _flags(pattern: str) -> int:
    # Normalised text is case folded already: only upper-case literals need IGNORECASE.
    literal = _NOT_LITERAL.sub("", pattern)
    return re.IGNORECASE if any(char.isupper() for char in literal) else 0


def scan(text: str, rules: tuple[Rule, ...]) -> tuple[str, dict[str, list[tuple[int, int]]]]:
    """Match every rule against ``normalise(text)``.

    Returns the normalised text and, per rule that matched, the spans it matched there.
    When no rule can match (no word a match starts with: most text), the spans are empty and
    the text returned has only its characters folded, which is all that was needed.
    """
    characters = fold_characters(text)
    if not any(rule.may_match(characters) for rule in rules):
        return characters, {}
    normalised = normalise(text)
    found: dict[str, list[tuple[int, int]]] = {}
    for rule in rules:
        spans = rule.spans(normalised)
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
