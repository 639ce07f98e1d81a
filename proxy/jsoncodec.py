"""JSON on the request path: orjson where it gives the same answer, the standard library
where only it does.

Every chat request is parsed and serialised several times (the request for validation and
ids, the response for usage, a persistence record, an access line), and on a Python proxy
those parses are a large share of the sidecar's own CPU. orjson does each several times
faster. It is stricter than :mod:`json` in a few corners (``NaN``, lone surrogates, integers
beyond 64 bits, non-string keys, nesting deeper than 1024); there the standard library takes
over, so results never change, only their cost.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

_STDLIB_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))

# orjson reads integers beyond 64 bits as floats, silently; a run of 20 digits anywhere (even
# inside a string, which merely costs the slower parse) sends the text to the exact parser.
# Digits mapped to "0" and the rest to ".", then a substring search: several times cheaper
# than a regular expression, which backtracks through every shorter run of digits.
_DIGITS_AS_ZERO = bytes(0x30 if 0x30 <= i <= 0x39 else 0x2E for i in range(256))
_LONG_RUN = b"0" * 20


def _has_long_number(data: bytes | bytearray | str) -> bool:
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    # find(), not ``in``: bytes.__contains__ first tries its argument as an integer and pays
    # for a formatted TypeError every time.
    return raw.translate(_DIGITS_AS_ZERO).find(_LONG_RUN) != -1


class DuplicateKeyError(ValueError):
    """The JSON text is well formed but an object in it repeats a key.

    ``value`` is the parse all the same, the last of the repeated keys winning as in every
    parser: code that only reads the body can still see what upstream would.
    """

    def __init__(self, value: Any) -> None:
        super().__init__("an object repeats a key")
        self.value = value


def loads(data: bytes | bytearray | str, *, unique_keys: bool = False) -> Any:
    """Parse JSON text exactly as :func:`json.loads` would; raises ``ValueError`` (or
    ``RecursionError``/``UnicodeDecodeError``) on what it would reject, and with
    ``unique_keys`` :class:`DuplicateKeyError` for an object that repeats a key."""
    if unique_keys:
        return _loads_unique(data)
    if not _has_long_number(data):
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    return json.loads(data)


def _loads_unique(data: bytes | bytearray | str) -> Any:
    # orjson keeps the last of repeated keys without a word: only the standard library's
    # hook sees them.
    repeated = False

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal repeated
        result = dict(items)
        if len(result) != len(items):
            repeated = True
        return result

    value = json.loads(data, object_pairs_hook=pairs)
    if repeated:
        raise DuplicateKeyError(value)
    return value


def dumps_bytes(value: Any) -> bytes:
    """``value`` as compact UTF-8 JSON (no spaces, non-ASCII kept), as
    ``json.dumps(value, ensure_ascii=False, separators=(",", ":"))`` would write it, except
    that floats take their shortest form (``1e-7``) and ``NaN``/``Infinity``, which JSON
    cannot carry, become ``null``."""
    try:
        return orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError):
        return _STDLIB_COMPACT.encode(value).encode()


def dumps(value: Any) -> str:
    """``value`` as compact JSON text (see :func:`dumps_bytes`)."""
    try:
        return orjson.dumps(value).decode()
    except (TypeError, orjson.JSONEncodeError):
        return _STDLIB_COMPACT.encode(value)


def has_lone_surrogate(data: bytes) -> bool:
    """Whether the JSON text ``data`` holds half of a UTF-16 surrogate pair on its own,
    escaped (``"\\ud800"``) or encoded as if it were a character (bytes ``ED A0 80``, which
    :mod:`json` decodes with ``surrogatepass``): a string no UTF-8 encoder, database or log
    line can take. Cheap for the bodies that cannot hold one."""
    if data.find(b"\xed") != -1:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return True
    if data.find(b"\\ud") == -1 and data.find(b"\\uD") == -1:
        return False
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        return "surrogate" in str(exc)
    return False
