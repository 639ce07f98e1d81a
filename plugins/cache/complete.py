"""Whether an answer is whole enough to be given again: a cut-off or failed generation
must never be replayed as if it were the model's answer."""

from __future__ import annotations

from typing import Any

__all__ = ["is_complete"]

#: Finish reasons of a generation that did not end normally.
_FAILED = frozenset({"error"})


def is_complete(operation: str, answer: Any) -> bool:
    """Whether ``answer`` (the JSON of a 200 answer to ``operation``) is complete: every
    choice of a completion finished for a normal reason, an embedding list has its data."""
    if not isinstance(answer, dict):
        return False
    if operation == "embeddings.create":
        data = answer.get("data")
        return isinstance(data, list) and bool(data)
    choices = answer.get("choices")
    if not isinstance(choices, list) or not choices:
        return False
    for choice in choices:
        if not isinstance(choice, dict) or not isinstance(choice.get("message"), dict):
            return False
        finish = choice.get("finish_reason")
        if not isinstance(finish, str) or not finish or finish in _FAILED:
            return False
    return True
