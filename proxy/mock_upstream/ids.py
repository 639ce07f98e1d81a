"""Identifiers and timestamps in the formats the Mistral API uses."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime


def new_id(prefix: str) -> str:
    """A random id such as ``conv_0a1b…`` (32 hex digits after the prefix)."""
    return f"{prefix}_{uuid.uuid4().hex}"


def new_uuid() -> str:
    """A random UUID string, the id format of files and batch jobs."""
    return str(uuid.uuid4())


def now_iso() -> str:
    """The current UTC time as an ISO-8601 string with a ``Z`` suffix."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def now_unix() -> int:
    """The current time in whole seconds since the epoch."""
    return int(time.time())
