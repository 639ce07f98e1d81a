"""The ``fallback.models`` setting: checking it and turning it into each model's fallbacks.

The setting maps a model to the models to try, in order, when it fails::

    fallback:
      models:
        mistral-large-latest: [mistral-medium-latest, mistral-small-latest]
        mistral-medium-latest: [mistral-small-latest]

A model's fallbacks have fallbacks of their own: a request for a model tries its own list
first, then the fallbacks of those models, breadth first, each model at most once. So
``A: [B]`` with ``B: [C]`` means A, then B, then C.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["FallbackTable", "problems"]


def problems(value: Any) -> list[str]:
    """What is wrong with a ``fallback.models`` value, one line per problem (no prefix)."""
    if value is None:
        return []
    if not isinstance(value, Mapping):
        return ["must map each model to the list of models to fall back to, got "
                f"{type(value).__name__}"]
    found: list[str] = []
    graph: dict[str, list[str]] = {}
    for model, fallbacks in value.items():
        if not isinstance(model, str) or not model.strip():
            found.append(f"{model!r}: a model name must be a non-empty string")
            continue
        if not isinstance(fallbacks, list) or not fallbacks:
            found.append(f"{model}: must be a non-empty list of models, got {fallbacks!r}")
            continue
        names = []
        for fallback in fallbacks:
            if not isinstance(fallback, str) or not fallback.strip():
                found.append(f"{model}: {fallback!r} is not a model name")
            elif fallback == model:
                found.append(f"{model}: a model cannot fall back to itself")
            elif fallback in names:
                found.append(f"{model}: {fallback} is listed twice")
            else:
                names.append(fallback)
        graph[model] = names
    found.extend(f"cycle: {' -> '.join(cycle)}" for cycle in _cycles(graph))
    return found


def _cycles(graph: Mapping[str, list[str]]) -> list[list[str]]:
    """Each cycle of ``graph`` once (as the path that closes it), in a stable order."""
    cycles: list[list[str]] = []
    seen_cycles: set[frozenset[str]] = set()
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        for following in graph.get(node, ()):
            if following in path:
                cycle = [*path[path.index(following):], following]
                key = frozenset(cycle)
                if key not in seen_cycles:
                    seen_cycles.add(key)
                    cycles.append(cycle)
            elif following not in done:
                visit(following, [*path, following])
        done.add(node)

    for start in graph:
        if start not in done:
            visit(start, [start])
    return cycles


class FallbackTable:
    """Each configured model's fallbacks, resolved once at start-up."""

    def __init__(self, value: Mapping[str, list[str]] | None) -> None:
        """Resolve a ``fallback.models`` value that :func:`problems` found nothing wrong
        with."""
        graph = {model: list(fallbacks) for model, fallbacks in (value or {}).items()}
        self._chains: dict[str, tuple[str, ...]] = {
            model: _breadth_first(graph, model) for model in graph}

    def __bool__(self) -> bool:
        return bool(self._chains)

    def fallbacks(self, model: str) -> tuple[str, ...]:
        """The models to try, in order, after ``model`` failed (empty: none)."""
        return self._chains.get(model, ())


def _breadth_first(graph: Mapping[str, list[str]], model: str) -> tuple[str, ...]:
    order: list[str] = []
    queue = list(graph[model])
    seen = {model}
    while queue:
        current = queue.pop(0)
        if current in seen:
            continue
        seen.add(current)
        order.append(current)
        queue.extend(graph.get(current, ()))
    return tuple(order)
