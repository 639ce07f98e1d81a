"""A metric family's children, each asked of prometheus_client once.

``family.labels(*values)`` validates and converts its arguments and takes the family's lock
on every call; on the request path, a dozen times per request, that was a measurable part of
the whole chain's cost. The child it returns is the same object for the same values, so it
is kept here by those values.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from prometheus_client import Counter, Histogram

__all__ = ["Children"]

F = TypeVar("F", Counter, Histogram)


class Children(Generic[F]):
    """``children(*values)`` is ``family.labels(*values)``, remembered.

    Give it label values that are bounded already (operations, :class:`BoundedValues`
    output ...): it keeps one entry per distinct combination, as the family itself does.
    """

    __slots__ = ("_children", "family")

    def __init__(self, family: F) -> None:
        self.family: F = family
        self._children: dict[tuple[str, ...], F] = {}

    def __call__(self, *values: str) -> F:
        """The child of ``family`` for label ``values`` (the family itself when it has no
        labels)."""
        if not values:
            return self.family
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self.family.labels(*values)
        return child
