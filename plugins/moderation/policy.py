"""Which scores block a request: per-category thresholds."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["DEFAULT_THRESHOLDS", "check_thresholds", "flagged", "highest"]

#: Harmful-content categories block from 0.8; the advice categories the model also reports
#: (health, financial, law, pii) describe ordinary questions and block nothing by default.
DEFAULT_THRESHOLDS: dict[str, float] = {
    "sexual": 0.8,
    "hate_and_discrimination": 0.8,
    "violence_and_threats": 0.8,
    "dangerous_and_criminal_content": 0.8,
    "selfharm": 0.8,
}


def check_thresholds(value: Any) -> str | None:
    """Validate the ``moderation.thresholds`` setting; an error message or ``None``."""
    if not isinstance(value, dict):
        return "must be a mapping of category name to score (0 to 1)"
    for category, threshold in value.items():
        if not isinstance(category, str) or not category:
            return "category names must be non-empty strings"
        if isinstance(threshold, bool) or not isinstance(threshold, int | float) \
                or not 0 <= threshold <= 1:
            return f"category {category!r}: threshold must be a number from 0 to 1"
    return None


def highest(results: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Per category, the highest score among ``results`` (the pieces of one field)."""
    merged: dict[str, float] = {}
    for scores in results:
        for category, score in scores.items():
            if score > merged.get(category, -1.0):
                merged[category] = score
    return merged


def flagged(scores: Mapping[str, float], thresholds: Mapping[str, float]) -> list[str]:
    """The categories whose score reaches its threshold, in threshold order."""
    return [category for category, threshold in thresholds.items()
            if scores.get(category, 0.0) >= threshold]
