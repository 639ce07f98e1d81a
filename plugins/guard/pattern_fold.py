"""Rule patterns in the folded alphabet: what a pattern spells literally is folded like text.

A rule is matched against folded text (:mod:`plugins.guard.normalise`), where Cyrillic "и"
has become its confusable prototype and "é" a plain "e". So that rules can be written as a
reader would write them, in any script, :func:`fold_pattern` folds the literal characters of
a pattern the same way before it is compiled:

- a run of literal characters is folded as text (so punctuation between two literal letters
  becomes a space, as in the text); a literal directly followed by a quantifier is folded on
  its own and grouped, so ``ß?`` stays "an optional ß";
- each member of a character class is folded on its own, and a range written with non-ASCII
  ends is expanded and folded member by member; members that fold to several characters
  ("ß" to "ss") become alternatives next to the class, which a negated class cannot have,
  so there they are refused;
- escapes (``\\w``, ``\\u0438``, ``\\N{...}``), group syntax and quantifiers are kept as
  written: an escaped character matches the folded text as it is.
"""

from __future__ import annotations

import re

from plugins.guard.folding import fold_char
from plugins.guard.normalise import normalise

__all__ = ["fold_pattern"]

_QUANTIFIER = re.compile(r"[*+?]|\{\d*(?:,\d*)?\}")
_GROUP_START = re.compile(
    r"\(\?(?:P<\w+>|P=\w+\)|#[^)]*\)|\([^)]*\)|<[=!]|[=!>:]|[aiLmsux-]+[:)])|\(")
_META = frozenset(".^$|)")
_MAX_RANGE = 0x3000


def fold_pattern(pattern: str) -> str:
    """``pattern`` with its literal characters folded; raises ``ValueError`` for a character
    class that folding cannot express."""
    out: list[str] = []
    run: list[str] = []

    def flush() -> None:
        if run:
            out.append(re.escape(normalise("".join(run))))
            run.clear()

    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            flush()
            end = _escape_end(pattern, index)
            out.append(pattern[index:end])
            index = end
        elif char == "[":
            flush()
            end, folded_class = _fold_class(pattern, index)
            out.append(folded_class)
            index = end
        elif char == "(":
            flush()
            match = _GROUP_START.match(pattern, index)
            end = match.end() if match else index + 1
            out.append(pattern[index:end])
            index = end
        elif char in _META or _QUANTIFIER.match(pattern, index):
            flush()
            match = _QUANTIFIER.match(pattern, index)
            end = match.end() if match else index + 1
            out.append(pattern[index:end])
            index = end
        elif _QUANTIFIER.match(pattern, index + 1):
            flush()
            folded = re.escape(normalise(char))
            out.append(folded if len(folded) == 1 else f"(?:{folded})")
            index += 1
        else:
            run.append(char)
            index += 1
    flush()
    return "".join(out)


def _escape_end(pattern: str, index: int) -> int:
    if pattern.startswith("\\N{", index):
        close = pattern.find("}", index)
        return len(pattern) if close == -1 else close + 1
    return min(index + 2, len(pattern))


def _fold_class(pattern: str, index: int) -> tuple[int, str]:
    """The end of the class starting at ``index`` and its folded text."""
    position = index + 1
    negated = pattern.startswith("^", position)
    if negated:
        position += 1
    members: list[str] = []
    longer: list[str] = []
    first = True
    while position < len(pattern) and (pattern[position] != "]" or first):
        first = False
        if pattern[position] == "\\":
            end = _escape_end(pattern, position)
            members.append(pattern[position:end])
            position = end
            continue
        low = pattern[position]
        if (position + 2 < len(pattern) and pattern[position + 1] == "-"
                and pattern[position + 2] not in "]\\"):
            chars = _range(low, pattern[position + 2])
            position += 3
        else:
            chars = [low]
            position += 1
        for char in chars:
            if isinstance(char, tuple):
                members.append(f"{_class_escape(char[0])}-{_class_escape(char[1])}")
                continue
            folded = char.lower() if char.isascii() else fold_char(char)
            if len(folded) == 1:
                members.append(_class_escape(folded))
            elif folded:
                longer.append(re.escape(folded))
    if position >= len(pattern):
        raise ValueError("unterminated character class")
    if longer and negated:
        raise ValueError(f"a negated character class holds {', '.join(longer)!r} once "
                         "folded, several characters; write it as a negative lookahead")
    members = list(dict.fromkeys(members))
    longer = list(dict.fromkeys(longer))
    klass = ("[^" if negated else "[") + "".join(members) + "]" if members else ""
    if not longer:
        if not members:
            raise ValueError("a character class is empty once folded")
        return position + 1, klass
    return position + 1, "(?:" + "|".join([*longer, *([klass] if klass else [])]) + ")"


def _range(low: str, high: str) -> list[str | tuple[str, str]]:
    if low.isascii() and high.isascii():
        return [(low, high)]
    if ord(high) - ord(low) > _MAX_RANGE:
        raise ValueError(f"the range {low}-{high} is too wide to fold; use an escape "
                         "range (\\uXXXX-\\uXXXX) to match folded text as it is")
    return [chr(code) for code in range(ord(low), ord(high) + 1)]


def _class_escape(char: str) -> str:
    return "\\" + char if char in "\\]^-[" else char
