"""Reading prices: the shipped table, an operator's price file and inline overrides, each
checked, then merged into one :class:`~plugins.prices.table.PriceTable`.

Every problem is reported, one line each, naming where it is (file, line, key), so that a
bad file stops start-up with everything wrong in it at once. Layers apply in order: the
shipped table (unless the operator's file says ``replace: true``), the operator's file, the
inline overrides. A later layer's entry for a name replaces the earlier one's whole, whether
the name was a model or an alias there.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from plugins.prices.table import PRICE_FIELDS, ModelPrice, PriceTable

__all__ = ["SHIPPED_FILE", "Layer", "build_table", "read_document", "read_overrides",
           "shipped_text"]

#: The shipped price file, next to this module.
SHIPPED_FILE = "mistral-prices.yaml"
_TOP_KEYS = ("as_of", "currency", "replace", "models", "aliases")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
#: The highest price taken: more than any model's, low enough that no request's cost
#: overflows where it is stored (a misplaced decimal point shows up here).
_HIGHEST = Decimal(1_000_000)


def shipped_text() -> str:
    """The text of the shipped price file."""
    return resources.files(__package__).joinpath(SHIPPED_FILE).read_text("utf-8")


@dataclass
class Layer:
    """What one source says: its models, aliases and, for a price file, its currency, date
    and whether it replaces the shipped table."""

    source: str
    models: dict[str, ModelPrice] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    currency: str | None = None
    as_of: date | None = None
    replace: bool = False


class _Problems:
    """Problem lines about one source, each naming the key and, in a file, its line."""

    def __init__(self, source: str, lines: Mapping[tuple[str, ...], int]) -> None:
        self.source = source
        self.lines = lines
        self.found: list[str] = []

    def add(self, path: tuple[str, ...], message: str) -> None:
        """Report ``message`` about the key at ``path`` (empty: the source as a whole)."""
        line = self.lines.get(path)
        where = f" line {line}" if line is not None else ""
        key = f" {'.'.join(path)}:" if path else ""
        self.found.append(f"{self.source}{where}:{key} {message}")


def read_document(text: str, source: str) -> tuple[Layer, list[str]]:
    """Read the price file ``text`` (the shipped table's format); ``source`` names it in
    problems."""
    layer = Layer(source)
    try:
        data = yaml.safe_load(text)
        lines = _key_lines(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        return layer, [f"{source}{where}: not valid YAML"]
    problems = _Problems(source, lines)
    if not isinstance(data, dict):
        problems.add((), "expected a mapping with currency, models and aliases")
        return layer, problems.found
    for key in data:
        if key not in _TOP_KEYS:
            problems.add((str(key),), f"unknown key (known: {', '.join(_TOP_KEYS)})")
    layer.currency = _currency(data.get("currency"), problems)
    layer.as_of = _as_of(data.get("as_of"), problems)
    replace = data.get("replace", False)
    if not isinstance(replace, bool):
        problems.add(("replace",), f"expected true or false, got {replace!r}")
    layer.replace = replace is True
    models = data.get("models", {})
    if isinstance(models, dict):
        _read_models(models, ("models",), layer, problems)
    else:
        problems.add(("models",), "expected a mapping of model names to prices")
    aliases = data.get("aliases") or {}
    if isinstance(aliases, dict):
        _read_aliases(aliases, layer, problems)
    else:
        problems.add(("aliases",), "expected a mapping of names to model names")
    return layer, problems.found


def read_overrides(data: Any, source: str) -> tuple[Layer, list[str]]:
    """Read inline overrides: a mapping of model names to prices (``prices.overrides``)."""
    layer = Layer(source)
    problems = _Problems(source, {})
    if isinstance(data, dict):
        _read_models(data, (), layer, problems)
    elif data:
        problems.add((), "expected a mapping of model names to prices")
    return layer, problems.found


def build_table(file_source: str | None = None, file_path: str = "",
                overrides: Any = None) -> tuple[PriceTable | None, list[str]]:
    """The table in force: the shipped one, changed by the price file at ``file_path`` (if
    any; ``file_source`` names it in problems) and the inline ``overrides``. Returns the
    problems instead of a table when there are any."""
    shipped, problems = read_document(shipped_text(), f"shipped price table {SHIPPED_FILE}")
    layers = [shipped]
    if file_path:
        source = f"{file_source or 'price file'} {file_path}"
        try:
            text = Path(file_path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            return None, [*problems, f"{source}: cannot read it ({reason})"]
        own, found = read_document(text, source)
        problems.extend(found)
        problems.extend(_currency_problems(shipped, own))
        layers = [own] if own.replace else [shipped, own]
    if overrides:
        inline, found = read_overrides(overrides, "prices.overrides")
        problems.extend(found)
        layers.append(inline)
    table, found = _merge(layers)
    problems.extend(found)
    return (None, problems) if problems else (table, [])


def _currency_problems(shipped: Layer, own: Layer) -> list[str]:
    if own.replace and own.currency is None:
        return [f"{own.source}: currency is required with replace: true"]
    if not own.replace and own.currency not in (None, shipped.currency):
        return [f"{own.source}: currency {own.currency} differs from the shipped table's "
                f"{shipped.currency}; give every price in {shipped.currency}, or set "
                "replace: true to use your table alone"]
    return []


def _merge(layers: list[Layer]) -> tuple[PriceTable, list[str]]:
    models: dict[str, ModelPrice] = {}
    aliases: dict[str, tuple[str, str]] = {}
    currency, as_of = "", None
    for layer in layers:
        currency = layer.currency or currency
        as_of = layer.as_of or as_of
        for name, price in layer.models.items():
            aliases.pop(name, None)
            models[name] = price
        for name, target in layer.aliases.items():
            models.pop(name, None)
            aliases[name] = (target, layer.source)
    problems = [f"{source}: aliases.{name}: names {target}, which is no model in the table"
                for name, (target, source) in aliases.items() if target not in models]
    return PriceTable(currency, as_of, models,
                      {name: target for name, (target, _source) in aliases.items()}), problems


def _currency(value: Any, problems: _Problems) -> str | None:
    if value is None:
        return None
    if isinstance(value, str) and _CURRENCY.match(value):
        return value
    problems.add(("currency",), f"expected an ISO 4217 code such as USD, got {value!r}")
    return None


def _as_of(value: Any, problems: _Problems) -> date | None:
    if value is None or isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    problems.add(("as_of",), f"expected a date such as 2025-09-01, got {value!r}")
    return None


def _read_models(models: dict[Any, Any], at: tuple[str, ...], layer: Layer,
                 problems: _Problems) -> None:
    for name, entry in models.items():
        path = (*at, str(name))
        if not isinstance(name, str) or not name.strip() or name != name.strip():
            problems.add(path, "a model name must be a non-empty string without spaces "
                         "around it")
            continue
        price = _price(entry, path, problems)
        if price is not None:
            layer.models[name] = price


def _price(entry: Any, path: tuple[str, ...], problems: _Problems) -> ModelPrice | None:
    if not isinstance(entry, dict) or not entry:
        problems.add(path, f"expected prices such as {{input: 0.1, output: 0.3}}, "
                     f"got {entry!r}")
        return None
    values: dict[str, Decimal] = {}
    ok = True
    for key, raw in entry.items():
        if key not in PRICE_FIELDS:
            problems.add((*path, str(key)),
                         f"unknown price (known: {', '.join(PRICE_FIELDS)})")
            ok = False
            continue
        amount = _amount(raw)
        if amount is None:
            problems.add((*path, key), "expected a price (a number from 0 to 1000000), "
                         f"got {raw!r}")
            ok = False
            continue
        values[key] = amount
    if ok and ("input" in values) != ("output" in values):
        problems.add(path, "input and output are priced together (0 for what a model "
                     "does not charge)")
        ok = False
    if ok and "cached_input" in values and "input" not in values:
        problems.add(path, "cached_input needs input and output prices")
        ok = False
    return ModelPrice(**values) if ok else None


def _amount(raw: Any) -> Decimal | None:
    """A price as written: a number or a numeric string, finite and not negative."""
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        return None
    try:
        # Through its text: 0.1 read as a float is not 0.1.
        amount = Decimal(str(raw).strip())
    except InvalidOperation:
        return None
    return amount if amount.is_finite() and 0 <= amount <= _HIGHEST else None


def _read_aliases(aliases: dict[Any, Any], layer: Layer, problems: _Problems) -> None:
    for name, target in aliases.items():
        path = ("aliases", str(name))
        if not isinstance(name, str) or not name.strip() or name != name.strip():
            problems.add(path, "an alias must be a non-empty string without spaces around it")
        elif not isinstance(target, str) or not target:
            problems.add(path, f"expected the name of a model, got {target!r}")
        elif name in layer.models:
            problems.add(path, "is also in models: a name is either a model or an alias")
        else:
            layer.aliases[name] = target


def _key_lines(text: str) -> dict[tuple[str, ...], int]:
    """The line of each key in the document's nested mappings, by its path of keys."""
    lines: dict[tuple[str, ...], int] = {}
    root = yaml.compose(text, Loader=yaml.SafeLoader)

    def walk(node: Any, path: tuple[str, ...]) -> None:
        if not isinstance(node, yaml.MappingNode):
            return
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                here = (*path, str(key.value))
                lines[here] = key.start_mark.line + 1
                walk(value, here)

    walk(root, ())
    return lines
