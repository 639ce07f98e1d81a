"""Deterministic "model" output: replies, token counts and embeddings.

Tokens are counted as whitespace-separated words (``len(text.split())``); prompt tokens
are the words of every message's text, completion tokens the words of the reply. The
same request therefore reports the same usage whether it is streamed or not.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Iterable
from typing import Any

REPLY_PREFIX = "Echo:"
EMBEDDING_DIM = 1024


def count_tokens(text: str) -> int:
    """Number of whitespace-separated words in ``text``."""
    return len(text.split())


def content_text(content: Any) -> str:
    """Flatten a message ``content`` (string, or list of typed chunks) into plain text."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for chunk in content:
            if isinstance(chunk, str):
                parts.append(chunk)
            elif isinstance(chunk, dict) and isinstance(chunk.get("text"), str):
                parts.append(chunk["text"])
        return " ".join(parts)
    return ""


def messages_text(messages: Iterable[Any]) -> str:
    """Concatenated text of every message, used to count prompt tokens."""
    return " ".join(content_text(m.get("content")) for m in messages if isinstance(m, dict))


def last_user_text(messages: Iterable[Any]) -> str:
    """Text of the last message whose role is ``user`` (empty if there is none)."""
    text = ""
    for message in messages:
        if isinstance(message, dict) and message.get("role") == "user":
            text = content_text(message.get("content"))
    return text


def make_reply(prompt: str, max_tokens: int | None = None) -> tuple[str, str]:
    """Return ``(reply, finish_reason)``: ``"Echo: <prompt words>"``, cut at ``max_tokens``."""
    words = [REPLY_PREFIX, *prompt.split()]
    if max_tokens is not None and 0 <= max_tokens < len(words):
        return " ".join(words[: max(max_tokens, 0)]), "length"
    return " ".join(words), "stop"


def split_deltas(text: str, parts: int) -> list[str]:
    """Split ``text`` into exactly ``parts`` consecutive pieces of near-equal length."""
    parts = max(parts, 1)
    size = len(text)
    return [text[i * size // parts : (i + 1) * size // parts] for i in range(parts)]


def embed(text: str, seed: int = 0, dim: int = EMBEDDING_DIM) -> list[float]:
    """A unit-length pseudo-random vector that depends only on ``text``, ``seed`` and ``dim``."""
    digest = hashlib.sha256(f"{seed}\x00{text}".encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    vector = [rng.gauss(0.0, 1.0) for _ in range(dim)]
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [round(v / norm, 7) for v in vector]


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """The ``usage`` object of completion and embedding responses."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
