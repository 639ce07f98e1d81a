"""The canonical request target: made once at the door, used everywhere after.

A caller controls the request target byte for byte, and every part of the sidecar that reads
it (operation classification, authorisation, tenancy, the input guard, usage, logs) must see
the same thing that upstream will act on. So the target is parsed once, here, into one
canonical form, and everything downstream, including the upstream URL, uses that form:

* Only origin-form targets (``/v1/...``) carry meaning. An absolute-form target
  (``http://host/v1/...``) contributes its path and query only; any other form is refused.
  Caller input never reaches the scheme, host or port of the upstream URL.
* The path is split into segments and percent-decoded once. Every escape is decoded (so
  ``conv%5Fabc`` and ``conv_abc`` name the same resource, as they do for upstream); what has
  no safe meaning is refused: an escape that is not two hex digits, bytes that are not UTF-8,
  an encoded ``/`` or ``\\``, a raw ``\\``, control characters (NUL included), and the
  dot-segments ``.`` and ``..``. Empty segments (``//``, a trailing ``/``) are dropped.
* The query string is kept as sent once it is known to be well formed (no control
  characters, no broken escapes); upstream and the sidecar parse it the same standard way.

:func:`upstream_path` turns the canonical path back into the encoded path sent upstream:
each segment quoted as an RFC 3986 ``pchar`` sequence, so upstream decodes exactly the
segments that were authorised.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from urllib.parse import quote, unquote

from proxy.errors import SidecarError

__all__ = ["CanonicalTarget", "canonical_target", "upstream_path"]

_ESCAPE = re.compile(r"%(?:[0-9A-Fa-f]{2})?")
_ABSOLUTE = re.compile(r"^[Hh][Tt][Tt][Pp][Ss]?://[^/?#]*")
#: Characters a path segment may hold unencoded (RFC 3986 ``pchar`` without ``%``).
_PCHAR_SAFE = "!$&'()*+,;=:@-._~"
_MAX_TARGET = 8 * 1024


@dataclass(frozen=True, slots=True)
class CanonicalTarget:
    """A request target in canonical form.

    ``path`` is absolute and decoded, with no empty segment (``/v1/conversations/abc``);
    ``query`` is the raw query string without its ``?``.
    """

    path: str
    query: str


def _refuse(reason: str) -> SidecarError:
    return SidecarError(400, f"Invalid request target: {reason}.", code="invalid_target")


def _has_control(text: str) -> bool:
    return any(unicodedata.category(ch) == "Cc" for ch in text)


def _decode_segment(segment: str) -> str:
    """One path segment with its escapes decoded; refuses what has no safe meaning."""
    if "%" not in segment:
        decoded = segment
    else:
        raw = bytearray()
        position = 0
        for match in _ESCAPE.finditer(segment):
            escape = match.group()
            if len(escape) != 3:
                raise _refuse("a '%' that is not followed by two hex digits")
            raw += segment[position:match.start()].encode("ascii")
            raw.append(int(escape[1:], 16))
            position = match.end()
        raw += segment[position:].encode("ascii")
        try:
            decoded = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _refuse("percent-encoded bytes that are not UTF-8") from None
    if "/" in decoded or "\\" in decoded:
        raise _refuse("an encoded '/' or a '\\' in a path segment")
    if _has_control(decoded):
        raise _refuse("a control character in the path")
    if decoded in (".", ".."):
        raise _refuse("a '.' or '..' path segment")
    return decoded


def canonical_target(raw_target: str) -> CanonicalTarget:
    """Parse the request target exactly as it arrived on the request line.

    Raises :class:`~proxy.errors.SidecarError` (400, ``invalid_target``) for a target that has
    no safe meaning.
    """
    if len(raw_target) > _MAX_TARGET:
        raise _refuse("too long")
    if not raw_target.isascii() or any(ch <= " " or ch == "\x7f" for ch in raw_target):
        raise _refuse("characters that must be percent-encoded")
    if "#" in raw_target:
        raise _refuse("a fragment")
    if not raw_target.startswith("/"):
        absolute = _ABSOLUTE.match(raw_target)
        if absolute is None:
            raise _refuse("only origin-form targets (/v1/...) are accepted")
        raw_target = raw_target[absolute.end():] or "/"
        if not raw_target.startswith(("/", "?")):
            raise _refuse("only origin-form targets (/v1/...) are accepted")
        if raw_target.startswith("?"):
            raw_target = "/" + raw_target
    raw_path, _, query = raw_target.partition("?")
    segments = [_decode_segment(s) for s in raw_path.split("/") if s]
    if "%" in query:
        for match in _ESCAPE.finditer(query):
            if len(match.group()) != 3:
                raise _refuse("a '%' in the query that is not followed by two hex digits")
        if _has_control(unquote(query)):
            raise _refuse("a control character in the query")
    return CanonicalTarget("/" + "/".join(segments), query)


def upstream_path(path: str) -> str:
    """The canonical ``path`` encoded for the upstream URL (each segment quoted)."""
    return "/".join(quote(segment, safe=_PCHAR_SAFE) for segment in path.split("/"))
