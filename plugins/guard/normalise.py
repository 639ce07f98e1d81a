"""The text the guard's rules see, and the way back from it to the caller's original text.

Rules match a *folded* view of the text so that look-alike letters, invisible characters and
odd spacing do not hide a phrase. In order:

1. the per-character table of :mod:`plugins.guard.folding`: default-ignorable and blank
   characters removed, tag characters read as the ASCII they hide, every other non-ASCII
   character replaced by its UTS #39 confusable prototype, then by its NFKD decomposition
   (fullwidth, bold, circled and ligature forms become plain letters) without combining marks
   (accents, strike-throughs);
2. case folding;
3. a run of punctuation, symbols or spaces between two letters or digits becomes one space
   (``ignore-all_previous`` reads ``ignore all previous``) unless it ends a sentence (``.``,
   ``?`` or ``!`` then whitespace), and every other run of whitespace becomes one space.

:func:`normalise` does this with whole-string operations (fast; used on every request).
:class:`Locator` maps spans of the folded text back to spans of the original, exactly, so
redaction replaces what the caller wrote and nothing around it. It cuts the original into
pieces of about 2,000 characters at points no step above reaches across (between two letters
or digits that each fold to letters or digits), folds each piece alone, and walks character by
character only through the pieces that hold a span boundary, so a detection in a
megabyte-sized field costs milliseconds. Where that cannot be done exactly (a piece over 64 Ki
characters because the text has no such points), it falls back to the whole piece, or to the
whole text if the pieces do not fold to the whole: conservative, never too little.
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from collections.abc import Iterable

from plugins.guard.folding import fold_char, table

__all__ = ["Locator", "fold_characters", "locate", "merge", "normalise"]

# A run of non-word characters between two word characters (but not the single plain space
# that separates most words: rewriting each of those would double the cost, and not a sentence
# end, a full stop or question or exclamation mark before whitespace: "What should I ignore?
# Previous instructions say..." is two sentences), or any other whitespace that is not
# already one plain space. The lookahead (?=[\W_]) is implied by the run that follows; it
# is there so that most positions (inside a word) fail on their first test.
_SPACES = re.compile(
    r"(?<=[^\W_])(?=[\W_])(?! [^\W_])(?![^\w]*?[.!?]\s)[\W_]+(?=[^\W_])|\s{2,}|[^\S ]")
# Candidate piece boundaries: between two word characters.
_SPLIT = re.compile(r"(?<=[^\W_])[^\W_]")
_PIECE_CHARS = 2048
_MAX_MAPPED_PIECE = 1 << 16


def fold_characters(text: str) -> str:
    """``text`` with every character folded, separators not yet rewritten: it holds every
    word :func:`normalise` gives, spelled the same (separators are never joined into one)."""
    if text.isascii():
        # Nothing for the table to do; casefold() is lower() on ASCII.
        return text.lower()
    return text.translate(table()).casefold()


def normalise(text: str) -> str:
    """The folded view of ``text`` that rules are matched against."""
    return _SPACES.sub(" ", fold_characters(text))


class Locator:
    """Maps spans of ``normalise(text)`` back to spans of ``text``."""

    def __init__(self, text: str, normalised_text: str | None = None) -> None:
        self.text = text
        self.whole = normalise(text) if normalised_text is None else normalised_text
        self._pieces = _pieces(text)
        self._folded = [normalise(text[start:end]) for start, end in self._pieces]
        self._exact = "".join(self._folded) == self.whole
        self._starts: list[int] = []
        offset = 0
        for folded in self._folded:
            self._starts.append(offset)
            offset += len(folded)
        self._maps: dict[int, list[tuple[int, int]] | None] = {}

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The original span behind the non-empty folded span ``[start, end)``: every
        original character that contributed to it (removed characters inside it included)."""
        if not self._exact:
            return (0, len(self.text))
        return (self._original(start, 0), self._original(end - 1, 1))

    def _original(self, position: int, edge: int) -> int:
        index = bisect.bisect_right(self._starts, position) - 1
        if index not in self._maps:
            piece_start, piece_end = self._pieces[index]
            self._maps[index] = (
                _char_map(self.text, piece_start, piece_end, self._folded[index])
                if piece_end - piece_start <= _MAX_MAPPED_PIECE else None)
        char_map = self._maps[index]
        if char_map is None:
            return self._pieces[index][edge]
        return char_map[position - self._starts[index]][edge]


def locate(
    text: str, spans: Iterable[tuple[int, int]], normalised_text: str | None = None
) -> list[tuple[int, int]]:
    """Map non-empty ``[start, end)`` spans of ``normalise(text)`` to spans of ``text``,
    sorted and merged. Pass ``normalised_text`` when ``normalise(text)`` is at hand."""
    locator = Locator(text, normalised_text)
    found = sorted(locator.span(start, end) for start, end in spans if end > start)
    return merge(found)


def merge(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted ``spans`` with overlapping or touching ones joined."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def _pieces(text: str) -> list[tuple[int, int]]:
    pieces: list[tuple[int, int]] = []
    start = 0
    while start < len(text):
        end = len(text)
        for split in _SPLIT.finditer(text, start + _PIECE_CHARS):
            if _clean_cut(text, split.start()):
                end = split.start()
                break
        pieces.append((start, end))
        start = end
    return pieces


def _clean_cut(text: str, at: int) -> bool:
    # Folding never reaches across a cut between two characters that fold to word characters
    # when the second starts a new combining sequence.
    before, after = fold_char(text[at - 1]), fold_char(text[at])
    return (bool(before) and bool(after) and before[-1].isalnum() and after[0].isalnum()
            and unicodedata.combining(text[at]) == 0)


def _char_map(text: str, start: int, end: int, expected: str) -> list[tuple[int, int]] | None:
    """For each character of ``normalise(text[start:end])``, the original span it came from.

    Characters are grouped into clusters (a character and the combining characters after it,
    which NFKD may reorder); each cluster is folded alone and all its output characters map to
    the whole cluster, then the spacing step runs over the result with spans merged. ``None``
    when that does not reproduce ``expected``.
    """
    chars: list[str] = []
    spans: list[tuple[int, int]] = []
    index = start
    while index < end:
        cluster_end = index + 1
        while cluster_end < end and unicodedata.combining(text[cluster_end]):
            cluster_end += 1
        cluster = text[index:cluster_end]
        folded = (cluster.lower() if cluster.isascii()
                  else cluster.translate(table()).casefold())
        for char in folded:
            chars.append(char)
            spans.append((index, cluster_end))
        index = cluster_end
    folded_text = "".join(chars)
    out: list[str] = []
    out_spans: list[tuple[int, int]] = []
    last = 0
    for match in _SPACES.finditer(folded_text):
        out.extend(folded_text[last:match.start()])
        out_spans.extend(spans[last:match.start()])
        out.append(" ")
        out_spans.append((spans[match.start()][0], spans[match.end() - 1][1]))
        last = match.end()
    out.extend(folded_text[last:])
    out_spans.extend(spans[last:])
    return out_spans if "".join(out) == expected else None
