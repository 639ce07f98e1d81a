"""Declared events: what each plugin says it emits, and the registry the application keeps
of them.

A plugin returns an :class:`EventSpec` for every event it emits from its ``sidecar_events``
hook: the event's name, what it means, its fields, the level of its log line and the metric
families it feeds (:class:`EventMetric`). The core gathers them once, when the application is
made (:meth:`EventRegistry.gather`); :func:`proxy.events.emit` refuses a name nobody declared,
and the logs and metrics plugins read levels and families from the declarations instead of
knowing other plugins' events by heart.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from proxy.chain import CHAIN_SETTING
from proxy.settings import ConfigError

if TYPE_CHECKING:
    from aiohttp import web

    from proxy.chain import PluginChain

__all__ = ["EventMetric", "EventRegistry", "EventSpec", "Label", "LevelWhen",
           "UndeclaredEvent"]




@dataclass(frozen=True, slots=True)
class Label:
    """A label of an event-fed family: the value of event field ``field`` (by default the
    field called ``name``), read through ``values`` where the field's values are not the
    label's, or the constant ``fixed``."""

    name: str
    field: str | None = None
    values: Mapping[Any, str] | None = None
    fixed: str | None = None

    def read(self, fields: Mapping[str, Any]) -> Any:
        """This label's value for an event with ``fields`` (not yet made safe)."""
        if self.fixed is not None:
            return self.fixed
        value = fields.get(self.field or self.name)
        if self.values is None:
            return value
        try:
            return self.values.get(value, value)
        except TypeError:  # a value that cannot be looked up (a list) reads as it is
            return value


@dataclass(frozen=True, slots=True)
class EventMetric:
    """How an event feeds metric family ``mistral_sidecar_<family>``.

    A counter (``<family>_total``) adds 1 per event, or the number in field ``amount``; with
    ``observe``, a histogram observes that field's number instead (``buckets`` required on
    the first declaration of the family). With ``when``, only events whose field of that name
    is true count. Several events of one plugin may feed one family, with the same labels.
    """

    family: str
    help: str
    labels: tuple[str | Label, ...] = ()
    amount: str | None = None
    when: str | None = None
    observe: str | None = None
    buckets: tuple[float, ...] = ()

    @property
    def label_readers(self) -> tuple[Label, ...]:
        """Every label as a :class:`Label` (a plain name reads the field of that name)."""
        return tuple(label if isinstance(label, Label) else Label(label)
                     for label in self.labels)

    @property
    def kind(self) -> str:
        """``"counter"`` or ``"histogram"``."""
        return "counter" if self.observe is None else "histogram"

    def fields_read(self) -> set[str]:
        """The event fields this family reads."""
        read = {label.field or label.name for label in self.label_readers
                if label.fixed is None}
        read.update(name for name in (self.amount, self.when, self.observe) if name)
        return read


@dataclass(frozen=True, slots=True)
class LevelWhen:
    """The log level ``level`` for an event whose field ``field`` is true or, with
    ``values``, is one of them."""

    field: str
    level: int | str
    values: tuple[Any, ...] | None = None

    def __post_init__(self) -> None:
        """Turn a level name into its number."""
        object.__setattr__(self, "level", _level(self.level))

    def applies(self, fields: Mapping[str, Any]) -> bool:
        """Whether an event with ``fields`` takes this level."""
        value = fields.get(self.field)
        if self.values is None:
            return bool(value)
        try:
            return value in self.values
        except TypeError:  # a value that cannot be compared (an odd type): no match
            return False


def _level(level: int | str) -> int:
    """A logging level given as a number or a name (``"warning"``) as its number."""
    if isinstance(level, int):
        return level
    number = logging.getLevelName(level.upper())
    if not isinstance(number, int):
        raise ValueError(f"unknown log level {level!r}")
    return number


@dataclass(frozen=True, slots=True)
class EventSpec:
    """One event a plugin emits.

    ``name`` is dotted, the plugin's name first (``retry.attempt``); ``help`` says what it
    means to an operator; ``fields`` are the (flat, JSON-safe) fields it carries. Its log
    line has level ``level`` (a number or a name, ``INFO`` by default), or that of the first
    rule in ``levels`` that applies to its fields. ``metrics`` are the families it feeds
    (every event is also counted in ``mistral_sidecar_events_total{event}``). Levels and
    metrics may read only the declared fields.
    """

    name: str
    help: str
    fields: tuple[str, ...] = ()
    level: int | str = logging.INFO
    levels: tuple[LevelWhen, ...] = ()
    metrics: tuple[EventMetric, ...] = ()

    def __post_init__(self) -> None:
        """Check the declaration and turn level names into numbers."""
        if not self.name or self.name != self.name.strip():
            raise ValueError(f"event name {self.name!r} is empty or padded")
        object.__setattr__(self, "level", _level(self.level))
        read = {rule.field for rule in self.levels}
        for metric in self.metrics:
            read |= metric.fields_read()
        unknown = sorted(read - set(self.fields))
        if unknown:
            raise ValueError(f"event {self.name}: levels or metrics read undeclared fields "
                             f"{', '.join(unknown)}")

    def level_of(self, fields: Mapping[str, Any]) -> int:
        """The level of the log line of this event with ``fields``."""
        for rule in self.levels:
            if rule.applies(fields):
                return int(rule.level)
        return int(self.level)

    @property
    def loudest_level(self) -> int:
        """The highest level a log line of this event can have, whatever its fields: below
        a logger's level, none of its lines is ever written."""
        return max([int(self.level), *(int(rule.level) for rule in self.levels)])


class UndeclaredEvent(LookupError):
    """An event was emitted that no plugin in the chain declares: a programming error."""


class EventRegistry:
    """Every event the plugins in the chain declare, by name."""

    def __init__(self, declared: Mapping[str, EventSpec]) -> None:
        self._declared = dict(declared)

    @classmethod
    def gather(cls, chain: PluginChain, app: web.Application) -> EventRegistry:
        """Ask every plugin's ``sidecar_events`` hook, in chain order.

        Raises :class:`proxy.settings.ConfigError` with one line per problem: an entry that is
        not an :class:`EventSpec`, an event two plugins declare, a family two plugins feed or
        that is declared as a counter and a histogram, or with different labels.
        """
        declared: dict[str, EventSpec] = {}
        owners: dict[str, str] = {}
        families: dict[str, tuple[str, EventMetric]] = {}
        problems: list[str] = []
        for plugin, result in chain.call_all("sidecar_events", app=app):
            for spec in result or ():
                if not isinstance(spec, EventSpec):
                    problems.append(f"{CHAIN_SETTING}: plugin {plugin}: sidecar_events returned "
                                    f"{spec!r}, not an EventSpec")
                    continue
                if spec.name in declared:
                    problems.append(f"{CHAIN_SETTING}: event {spec.name} is declared by both "
                                    f"{owners[spec.name]} and {plugin}")
                    continue
                declared[spec.name] = spec
                owners[spec.name] = plugin
                problems.extend(_family_problems(plugin, spec, families))
        if problems:
            raise ConfigError(problems)
        return cls(declared)

    def __contains__(self, name: object) -> bool:
        """Whether event ``name`` is declared."""
        return name in self._declared

    def __iter__(self) -> Iterator[EventSpec]:
        """Every declaration, in chain order."""
        return iter(self._declared.values())

    def __len__(self) -> int:
        """How many events are declared."""
        return len(self._declared)

    def spec(self, name: str) -> EventSpec:
        """The declaration of event ``name``; :class:`UndeclaredEvent` when there is none."""
        found = self._declared.get(name)
        if found is None:
            close = difflib.get_close_matches(name, list(self._declared), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise UndeclaredEvent(
                f"event {name!r} is not declared by any plugin in the chain{hint}: the plugin "
                "that emits it must return an EventSpec for it from its sidecar_events hook")
        return found


def _family_problems(plugin: str, spec: EventSpec,
                     families: dict[str, tuple[str, EventMetric]]) -> list[str]:
    """What is wrong with the families ``spec`` feeds, given those declared before it
    (``families``, which this adds to)."""
    problems = []
    for metric in spec.metrics:
        if metric.family not in families:
            families[metric.family] = (plugin, metric)
            continue
        owner, earlier = families[metric.family]
        if owner != plugin:
            problems.append(f"{CHAIN_SETTING}: metric family {metric.family} is fed by events of "
                            f"both {owner} and {plugin}")
        elif earlier.kind != metric.kind or (
                [label.name for label in earlier.label_readers]
                != [label.name for label in metric.label_readers]):
            problems.append(f"{CHAIN_SETTING}: plugin {plugin}: event {spec.name} feeds metric "
                            f"family {metric.family} with another kind or other labels than "
                            "its earlier events")
    return problems
