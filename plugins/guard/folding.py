"""The per-character folding table, built from ICU's Unicode data (through PyICU).

One :func:`str.translate` table, applied before case folding (see
:mod:`plugins.guard.normalise`), does everything that works character by character:

- NFKD: fullwidth, bold, circled and ligature forms become plain letters, accented letters a
  letter and combining marks (when that gives ASCII, it is the answer; otherwise it is taken
  after the confusable prototype below, since a compatibility decomposition can change the
  look: GREEK LUNATE SIGMA SYMBOL U+03F2, a look-alike of "c", decomposes to a final sigma);
- every ``Default_Ignorable_Code_Point`` is removed (zero-width spaces and joiners, word
  joiner, BOM, soft hyphen, combining grapheme joiner U+034F, variation selectors U+FE00..
  and U+E0100.., Hangul fillers U+115F, U+1160, U+3164, U+FFA0, bidirectional controls, ...),
  and so are :data:`BLANKS`, characters that render as an empty cell without that property;
- Unicode *tag* characters (U+E0020..U+E007E), which render as nothing but which models read,
  become the ASCII characters they shadow (the other tag characters are removed);
- combining marks (general categories Mn and Me) are removed, so an accent or a strike-through
  stacked on a letter leaves the letter;
- every other character becomes its confusable *prototype*: the UTS #39 skeleton ICU's
  ``SpoofChecker`` computes (Cyrillic U+043E and Greek U+03BF become Latin "o", Cyrillic
  U+0456 becomes "i", ...), itself decomposed, stripped of marks and case folded until
  nothing changes.

Matching is case-insensitive, so a letter and its other case must fold alike, yet some letters
look like Latin ones in one case only: Cyrillic TE, EN, KA, EM and VE in upper case, Greek
IOTA in lower case. Both cases of a letter therefore take the first ASCII skeleton among their
lower case's and their upper case's, so "INSTRUCTIONS" written with Cyrillic TE still reads
"instructions"; Russian or Greek rules keep matching, as rules are folded alike. A prototype
that would turn punctuation into a letter or a letter into punctuation (an em dash looks like
the katakana "ー") is not taken: words must stay words for the spacing step.

ASCII characters are never mapped: the skeleton would turn "m" into "rn" and "I" into "l",
which is right for comparing identifiers but would make every rule unreadable. Data and
algorithm are ICU's (Unicode 17 in ICU 78), not a list kept here.
"""

from __future__ import annotations

import functools
import unicodedata

import icu

__all__ = ["BLANKS", "fold_char", "table"]

#: Characters drawn as an empty cell that are not default-ignorable: BRAILLE PATTERN BLANK
#: and MUSICAL SYMBOL NULL NOTEHEAD, both used to fake spaces and pad words.
BLANKS = frozenset({0x2800, 0x1D159})

_TAG_ASCII = range(0xE0020, 0xE007F)
_SETTLE_ROUNDS = 6


@functools.cache
def table() -> dict[int, str | None]:
    """The translate table: code point -> folded text, or ``None`` to remove it.

    Built on first use (some 0.2 s) and shared for the life of the process.
    """
    removed = icu.UnicodeSet("[[:Default_Ignorable_Code_Point:][:Mn:][:Me:]]")
    mapping: dict[int, str | None] = {}
    for first, last in removed.ranges():
        for cp in range(ord(first), ord(last) + 1):
            mapping[cp] = None
    for cp in BLANKS:
        mapping[cp] = None
    for cp in _TAG_ASCII:
        mapping[cp] = chr(cp - 0xE0000).lower()
    checker = icu.SpoofChecker()
    candidates = icu.UnicodeSet("[^[:Cn:][:Cs:][:Co:][\\u0000-\\u007f]]")
    for first, last in candidates.ranges():
        for cp in range(ord(first), ord(last) + 1):
            if cp in mapping:
                continue
            char = chr(cp)
            if (unicodedata.normalize("NFKD", char) == char and char.casefold() == char
                    and _prototype(char, checker) == char):
                continue
            folded = _settle(char, checker, mapping)
            if folded != char:
                mapping[cp] = folded
    return mapping


def fold_char(char: str) -> str:
    """What one character becomes in the folded text (before spaces are handled)."""
    return char.translate(table()).casefold()


def _prototype(char: str, checker: icu.SpoofChecker) -> str:
    """What ``char`` folds to: its compatibility decomposition when that is ASCII (a
    mathematical bold m is "m", where the skeleton would say "rn"), else the first ASCII
    skeleton of its lower and upper case."""
    plain = "".join(c for c in unicodedata.normalize("NFKD", char) if not _ignorable(c))
    if plain and plain.isascii():
        return plain
    lower, upper = char.lower(), char.upper()
    own = checker.getSkeleton(0, lower)
    if own.isascii() or len(upper) != 1:
        return _same_kind(char, own)
    other = checker.getSkeleton(0, upper)
    return _same_kind(char, other if other.isascii() else own)


def _same_kind(char: str, prototype: str) -> str:
    # A letter or digit must stay one, and anything else must not become one.
    if char.isalnum() == all(c.isalnum() for c in prototype if not _ignorable(c)):
        return prototype
    return char.lower()


def _ignorable(char: str) -> bool:
    return unicodedata.category(char) in ("Mn", "Me")


def _settle(text: str, checker: icu.SpoofChecker, removed: dict[int, str | None]) -> str:
    # A prototype can itself decompose, carry a mark or have a case: repeat the steps until
    # the result is stable, so the table maps every character to a fixed point.
    for _ in range(_SETTLE_ROUNDS):
        prototypes = "".join(c if c.isascii() else _prototype(c, checker) for c in text)
        decomposed = unicodedata.normalize("NFKD", prototypes)
        folded = "".join(c for c in decomposed if removed.get(ord(c), c) is not None).casefold()
        if folded == text:
            break
        text = folded
    return text
