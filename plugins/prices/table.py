"""A price table: what each model costs, the other names models go by, and what one
request's usage costs at those prices.

Money is :class:`~decimal.Decimal` throughout, exact: a cost is rounded only where it is shown
or stored in a unit too coarse for it (see :mod:`plugins.persistence.records`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from proxy.context import Usage

__all__ = ["PRICE_FIELDS", "ModelPrice", "PriceTable"]

_MILLION = Decimal(1_000_000)
_THOUSAND = Decimal(1000)
_SIXTY = Decimal(60)

#: The price fields of a model's entry, as the price file names them.
PRICE_FIELDS = ("input", "output", "cached_input", "per_1000_pages", "per_audio_minute")


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """One model's prices in the table's currency: ``input``, ``output`` and
    ``cached_input`` per million tokens, ``per_1000_pages`` (OCR) and ``per_audio_minute``;
    ``None`` for what the model is not charged for."""

    input: Decimal | None = None
    output: Decimal | None = None
    cached_input: Decimal | None = None
    per_1000_pages: Decimal | None = None
    per_audio_minute: Decimal | None = None

    def cost(self, usage: Usage) -> Decimal:
        """What ``usage`` costs at these prices.

        Prompt tokens served from the cache cost ``cached_input`` (the input price when there
        is none), the other prompt tokens ``input``, completion tokens ``output``; pages and
        audio minutes their own prices. What this entry has no price for costs nothing.
        """
        total = Decimal(0)
        if self.input is not None:
            prompt = max(usage.prompt_tokens, 0)
            cached = min(max(usage.cached_tokens, 0), prompt)
            cached_price = self.input if self.cached_input is None else self.cached_input
            tokens = (prompt - cached) * self.input + cached * cached_price
            if self.output is not None:
                tokens += max(usage.completion_tokens, 0) * self.output
            total += tokens / _MILLION
        if self.per_1000_pages is not None and usage.pages > 0:
            total += usage.pages * self.per_1000_pages / _THOUSAND
        if self.per_audio_minute is not None and usage.audio_seconds > 0:
            # Through its text: a float's exact binary value is not what upstream wrote.
            total += Decimal(str(usage.audio_seconds)) * self.per_audio_minute / _SIXTY
        return total


@dataclass(frozen=True)
class PriceTable:
    """Prices in ``currency`` for the models in ``models``, which ``aliases`` also name,
    valid as of ``as_of``."""

    currency: str
    as_of: date | None
    models: Mapping[str, ModelPrice]
    aliases: Mapping[str, str]

    def price_of(self, model: str) -> ModelPrice | None:
        """The price of ``model``, named as in the table or by one of its aliases; ``None``
        when the table does not name it (no other name is tried: an unknown model's cost is
        unknown)."""
        found = self.models.get(model)
        if found is None:
            target = self.aliases.get(model)
            if target is not None:
                found = self.models.get(target)
        return found

    def cost(self, model: str, usage: Usage) -> Decimal | None:
        """What ``usage`` of ``model`` costs, ``None`` when the model has no price."""
        price = self.price_of(model)
        return None if price is None else price.cost(usage)
