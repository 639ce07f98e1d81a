"""The text the guard's rules see, and the way back from it to the caller's original text.

Rules match a *normalised* view of each field so that trivial obfuscation does not slip
through. In order:

1. invisible format characters are removed: zero-width space, non-joiner and joiner
   (U+200B..U+200D), word joiner and invisible operators (U+2060..U+2064), byte-order mark /
   zero-width no-break space (U+FEFF), soft hyphen (U+00AD), Mongolian vowel separator
   (U+180E), and the bidirectional controls (U+200E, U+200F, U+202A..U+202E,
   U+2066..U+2069);
2. Unicode *tag* characters (U+E0020..U+E007E), which render as nothing but which models read,
   are turned into the ASCII characters they shadow (other tag characters are removed);
3. Unicode NFKC (fullwidth letters, ligatures such as "ﬁ", circled and styled letters become
   plain ones);
4. case folding;
5. every run of whitespace becomes one space.

:func:`normalise` does this with whole-string operations (fast; used on every field).
:func:`locate` maps spans of the normalised text back to spans of the original, exactly, so
redaction replaces what the caller wrote and nothing around it. It cuts the original into
pieces of about 2,000 characters at points no step above reaches across (before a letter or
digit of a common script that follows a non-space character), normalises each piece alone,
and walks character by character only through the pieces that hold a span boundary, so a
detection in a megabyte-sized field costs milliseconds. Where that cannot be done exactly
(a piece over 64 Ki characters because the text has no such points, or a script whose NFKC
composition crosses them), it falls back to the whole piece or the whole field: conservative,
never too little.
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from collections.abc import Iterable

__all__ = ["locate", "normalise"]

_REMOVED = [0x00AD, 0x180E, *range(0x200B, 0x2010), *range(0x202A, 0x202F),
            *range(0x2060, 0x2065), *range(0x2066, 0x206A), 0xFEFF, 0xE0001, 0xE007F]
_TABLE: dict[int, str | None] = {cp: None for cp in _REMOVED}
_TABLE.update({cp: chr(cp - 0xE0000) for cp in range(0xE0020, 0xE007F)})

_INVISIBLE = re.compile("[" + "".join(
    chr(cp) for cp in sorted(_TABLE) if cp < 0xE0000) + "\U000e0000-\U000e007f]")
# Single plain spaces are left alone: substituting each one would cost more than the rest
# of the normalisation together.
_WHITESPACE = re.compile(r"\s{2,}|[^\S ]")
# A piece boundary: before a letter or digit of a common script that follows a non-space
# character. Such a letter starts its own combining cluster and composes with nothing before
# it, and whitespace runs cannot cross it. (Anything this gets wrong is caught by comparing
# the pieces with the whole; see ``locate``.)
_SPLIT = re.compile(
    "(?<=\\S)[0-9A-Za-z\u00c0-\u00ff\u0391-\u03c9\u0410-\u044f\u05d0-\u05ea"
    "\u0621-\u064a\u0915-\u0939\u0e01-\u0e2e\u3041-\u3096\u30a1-\u30fa"
    "\u4e00-\u9fff]")
_PIECE_CHARS = 2048
_MAX_MAPPED_PIECE = 1 << 16


def normalise(text: str) -> str:
    """The view of ``text`` the rules are matched against."""
    if _INVISIBLE.search(text):
        text = text.translate(_TABLE)
    folded = unicodedata.normalize("NFKC", text).casefold()
    return _WHITESPACE.sub(" ", folded)


def locate(
    text: str, spans: Iterable[tuple[int, int]], normalised_text: str | None = None
) -> list[tuple[int, int]]:
    """Map non-empty ``[start, end)`` spans of ``normalise(text)`` to spans of ``text``.

    Each result covers every original character that contributed to the normalised span
    (invisible characters inside it included). Results are sorted and merged. Pass
    ``normalised_text`` when ``normalise(text)`` is already at hand.
    """
    pieces = _pieces(text)
    normalised = [normalise(text[start:end]) for start, end in pieces]
    whole = normalise(text) if normalised_text is None else normalised_text
    if "".join(normalised) != whole:
        return [(0, len(text))] if text else []
    starts: list[int] = []
    offset = 0
    for norm in normalised:
        starts.append(offset)
        offset += len(norm)
    maps: dict[int, list[tuple[int, int]] | None] = {}

    def original(position: int, edge: int) -> int:
        """Original offset of normalised character ``position``: its start (edge 0) or end."""
        index = bisect.bisect_right(starts, position) - 1
        if index not in maps:
            piece_start, piece_end = pieces[index]
            maps[index] = (
                _char_map(text, piece_start, piece_end, normalised[index])
                if piece_end - piece_start <= _MAX_MAPPED_PIECE else None)
        char_map = maps[index]
        if char_map is None:
            return pieces[index][edge]
        return char_map[position - starts[index]][edge]

    found = sorted((original(start, 0), original(end - 1, 1))
                   for start, end in spans if end > start)
    merged: list[tuple[int, int]] = []
    for start, end in found:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def _pieces(text: str) -> list[tuple[int, int]]:
    pieces: list[tuple[int, int]] = []
    start = 0
    while start < len(text):
        split = _SPLIT.search(text, start + _PIECE_CHARS)
        end = split.start() if split else len(text)
        pieces.append((start, end))
        start = end
    return pieces


def _char_map(text: str, start: int, end: int, expected: str) -> list[tuple[int, int]] | None:
    """For each character of ``normalise(text[start:end])``, the original span it came from.

    Characters are grouped into clusters (a starter and the combining marks after it; removed
    characters between them fall inside the cluster's span); each cluster is normalised alone
    and all its output characters map to the whole cluster. ``None`` when that does not
    reproduce ``expected``.
    """
    out: list[str] = []
    spans: list[tuple[int, int]] = []
    cluster: list[str] = []
    cluster_start = start
    cluster_end = start

    def flush() -> None:
        if not cluster:
            return
        folded = unicodedata.normalize("NFKC", "".join(cluster)).casefold()
        for char in folded:
            if char.isspace():
                if out and out[-1] == " ":
                    spans[-1] = (spans[-1][0], cluster_end)
                    continue
                char = " "
            out.append(char)
            spans.append((cluster_start, cluster_end))
        cluster.clear()

    for index in range(start, end):
        mapped = _TABLE.get(ord(text[index]), text[index])
        if mapped is None:
            continue
        if cluster and unicodedata.combining(mapped) == 0:
            flush()
        if not cluster:
            cluster_start = index
        cluster.append(mapped)
        cluster_end = index + 1
    flush()
    return spans if "".join(out) == expected else None
