"""A logging filter that removes secrets from records before anything formats them."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

from proxy.settings import Settings

REDACTED = "[REDACTED]"
#: How every sidecar caller key starts (``sk-sidecar-<key id>-<secret>``, see
#: ``plugins.auth.keys``; spelled out here so logging does not depend on the auth plugin).
CALLER_KEY_PREFIX = "sk-sidecar-"

#: Attributes every record has; the others are extra fields, which are redacted too.
_STANDARD_ATTRS = frozenset(logging.LogRecord(
    "x", logging.INFO, "x", 0, "x", None, None).__dict__) | {"message", "asctime", "taskName"}


def secret_values(settings: Settings) -> list[str]:
    """The values of every setting declared secret (each item of a list separately)."""
    found: list[str] = []
    for name, setting in settings.declared.items():
        if not setting.secret:
            continue
        value = settings.get(name)
        items = value if isinstance(value, list | tuple) else [value]
        found.extend(str(item) for item in items if item not in (None, ""))
    return found


class SecretRedactor(logging.Filter):
    """Removes secrets from a record, in place, before any handler formats it.

    Redacts the given literal values (four characters or more), sidecar caller keys (all but
    their public key id), bearer tokens (also when the whitespace after ``Bearer`` is written
    escaped, as in a ``repr``) and the password in ``scheme://user:password@host``, in the
    message (a dict message's values and keys included), its arguments, extra fields (nested
    ones included), the exception's traceback and the stack. Defence in depth: nothing should
    log them anyway.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.literals = tuple(sorted({s for s in secrets if len(s) >= 4}, key=len,
                                     reverse=True))
        parts = ([f"(?P<lit>{'|'.join(re.escape(s) for s in self.literals)})"]
                 if self.literals else [])
        parts.append(r"(?P<bearer>(?i:bearer)(?:\s|\\[rnt])+)[A-Za-z0-9._~+/-]+=*")
        parts.append(r"(?P<url>://[^:/@\s\"']*:)[^@/\s\"']+@")
        # Possessive, and not before [REDACTED]: the root logger's handlers each redact the
        # same record, and a key redacted once must not lose its public id the second time.
        parts.append(r"(?P<key>" + re.escape(CALLER_KEY_PREFIX) + r"(?:[0-9a-f]{16}-)?)"
                     r"[A-Za-z0-9_-]++(?!" + re.escape(REDACTED) + ")")
        self.pattern = re.compile("|".join(parts))

    def suspicious(self, text: str) -> bool:
        """Whether ``text`` may hold a secret: substring searches (in C) that spare the full
        pattern, several times slower, on the text that has none."""
        if any(literal in text for literal in self.literals):
            return True
        if "@" in text and "://" in text:
            return True
        return CALLER_KEY_PREFIX in text or "bearer" in text.lower()

    def redact(self, text: str) -> str:
        """``text`` with every secret replaced by ``[REDACTED]``."""
        return self.pattern.sub(self._replace, text)

    @staticmethod
    def _replace(match: re.Match[str]) -> str:
        for group in ("bearer", "key"):
            if match.group(group) is not None:
                return match.group(group) + REDACTED
        if match.group("url") is not None:
            return match.group("url") + REDACTED + "@"
        return REDACTED

    def _redact_text(self, text: str) -> str:
        return self.redact(text) if self.suspicious(text) else text

    def _redact_value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self._redact_text(value)
        if isinstance(value, dict):
            return {(self._redact_text(k) if isinstance(k, str) else k): self._redact_value(v)
                    for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._redact_value(v) for v in value]
        return value

    def _needs_redaction(self, values: Iterable[Any]) -> bool:
        """Whether any of ``values`` may hold a secret (containers are not searched: they
        are redacted item by item anyway)."""
        texts: list[str] = []
        for value in values:
            if isinstance(value, str):
                texts.append(value)
            elif isinstance(value, dict | list | tuple):
                return True
        return bool(texts) and self.suspicious("\x00".join(texts))

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact in place; never drops a record."""
        msg = record.msg
        if isinstance(msg, dict):
            if self._needs_redaction(msg.values()):
                record.msg = self._redact_value(msg)
        else:
            # The arguments merged in, once: formatters after this one see plain text.
            record.msg = self._redact_text(record.getMessage() if record.args else str(msg))
            record.args = None
        attrs = record.__dict__
        extras = [key for key in attrs if key not in _STANDARD_ATTRS]
        if extras and self._needs_redaction(attrs[key] for key in extras):
            for key in extras:
                attrs[key] = self._redact_value(attrs[key])
        if record.exc_info:
            if not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            # Formatters render exc_info again when it is there: keep only the redacted text.
            record.exc_info = None
        if record.exc_text:
            record.exc_text = self._redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = self._redact_text(record.stack_info)
        return True
