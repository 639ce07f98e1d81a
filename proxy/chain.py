"""Loading plugins into a pluggy manager and calling their hooks in chain order."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any

import pluggy

from proxy import PROJECT_NAME, hookspecs
from proxy.settings import ConfigError

ENTRY_POINT_GROUP = PROJECT_NAME

#: How problems with the chain name the setting.
CHAIN_SETTING = "plugins.chain (SIDECAR_PLUGINS_CHAIN)"


def installed_plugins() -> dict[str, str]:
    """Plugins registered in the ``mistral_sidecar`` entry-point group: name -> target."""
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _import_plugin(name: str) -> object:
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            try:
                return ep.load()
            except ImportError as exc:
                raise ConfigError(
                    [f"{CHAIN_SETTING}: cannot import plugin {name!r} "
                     f"({ep.value}): {exc}"]) from None
    module_name, _, attr = name.partition(":")
    try:
        module: ModuleType = importlib.import_module(module_name)
    except ImportError as exc:
        if exc.name != module_name.split(".")[0] and exc.name != module_name:
            raise ConfigError(
                [f"{CHAIN_SETTING}: cannot import plugin {name!r}: {exc}"]
            ) from None
        known = ", ".join(sorted(installed_plugins())) or "none"
        raise ConfigError(
            [f"{CHAIN_SETTING}: unknown plugin {name!r} (installed: {known})"]
        ) from None
    return getattr(module, attr) if attr else module


#: Set on an ``on_event`` implementation by :func:`proxy.events.observes`: the event names it
#: observes.
OBSERVED_EVENTS_ATTRIBUTE = "sidecar_observed_events"
#: A plugin's module-level tuple of the plugins it needs earlier in the chain.
REQUIRES_ATTRIBUTE = "requires"


class HookCaller:
    """One plugin's implementation of one hook, called with only the arguments it declares."""

    __slots__ = ("argnames", "function", "plugin_name")

    def __init__(self, plugin_name: str, function: Callable[..., Any],
                 argnames: tuple[str, ...]) -> None:
        self.plugin_name = plugin_name
        self.function = function
        self.argnames = argnames

    def __call__(self, **kwargs: Any) -> Any:
        """Call the implementation with the arguments it declares, picked from ``kwargs`` by
        name (the hook's full set)."""
        # Passed in the implementation's own order, as pluggy does: its parameters may be
        # positional-only.
        return self.function(*[kwargs[name] for name in self.argnames])


class PluginChain:
    """The enabled plugins, registered with pluggy, and their hooks in chain order."""

    def __init__(self, names: list[str]) -> None:
        self.names = list(names)
        self.pm = pluggy.PluginManager(PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        seen: set[str] = set()
        plugins: list[tuple[str, object]] = []
        for name in names:
            if name in seen:
                raise ConfigError([f"{CHAIN_SETTING}: {name!r} listed twice"])
            seen.add(name)
            plugins.append((name, _import_plugin(name)))
        # pluggy calls the last registered first; registering in reverse keeps its own
        # ``pm.hook`` calls in chain order too.
        for name, plugin in reversed(plugins):
            try:
                self.pm.register(plugin, name=name)
            except ValueError as exc:
                raise ConfigError([f"{CHAIN_SETTING}: {name!r}: {exc}"]) from None
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            raise ConfigError([f"{CHAIN_SETTING}: {exc}"]) from None
        problems = [line for name, plugin in plugins for line in _unsupported_options(
            name, self.pm.get_hookcallers(plugin) or ())]
        if problems:
            raise ConfigError(problems)
        self._order = {name: i for i, name in enumerate(names)}
        self._cache: dict[str, tuple[HookCaller, ...]] = {}
        self._event_cache: dict[str, tuple[HookCaller, ...]] = {}

    def position(self, plugin_name: str) -> int:
        """Where ``plugin_name`` is in the chain (plugins outside it come last)."""
        return self._order.get(plugin_name, 1 << 30)

    def callers(self, hook_name: str) -> tuple[HookCaller, ...]:
        """Implementations of ``hook_name`` in chain order (cached)."""
        cached = self._cache.get(hook_name)
        if cached is None:
            impls = getattr(self.pm.hook, hook_name).get_hookimpls()
            ordered = sorted(impls, key=lambda impl: self.position(impl.plugin_name))
            cached = tuple(
                HookCaller(impl.plugin_name, impl.function, tuple(impl.argnames))
                for impl in ordered
            )
            self._cache[hook_name] = cached
        return cached

    def event_callers(self, event_name: str) -> tuple[HookCaller, ...]:
        """The ``on_event`` implementations that observe ``event_name``, in chain order:
        those marked with :func:`proxy.events.observes` only for the names they list
        (cached)."""
        cached = self._event_cache.get(event_name)
        if cached is None:
            cached = tuple(
                caller for caller in self.callers("on_event")
                if event_name in getattr(caller.function, OBSERVED_EVENTS_ATTRIBUTE,
                                         (event_name,)))
            self._event_cache[event_name] = cached
        return cached

    def call_all(self, hook_name: str, **kwargs: Any) -> Iterator[tuple[str, Any]]:
        """Call every implementation in chain order, yielding ``(plugin, result)``."""
        for caller in self.callers(hook_name):
            yield caller.plugin_name, caller(**kwargs)

    async def await_all(self, hook_name: str, reverse: bool = False, **kwargs: Any) -> list[Any]:
        """Call every implementation in order, awaiting any awaitable result before the next."""
        callers = self.callers(hook_name)
        results = []
        for caller in reversed(callers) if reverse else callers:
            results.append(await await_me_maybe(caller(**kwargs)))
        return results

    def describe(self) -> list[tuple[str, str, list[str]]]:
        """``(name, module, hooks implemented)`` for each plugin, in chain order."""
        rows = []
        for name in self.names:
            plugin = self.pm.get_plugin(name)
            module = getattr(plugin, "__name__", type(plugin).__name__)
            hooks = sorted(
                caller.name for caller in self.pm.get_hookcallers(plugin) or ()
            )
            rows.append((name, module, hooks))
        return rows

    def requirement_problems(self) -> list[str]:
        """One line per plugin that needs another earlier in the chain and does not find it
        there: a plugin says which it needs with a module-level ``requires``, a tuple of
        names as ``plugins.chain`` spells them (``requires = ("store",)``)."""
        problems = []
        for position, name in enumerate(self.names):
            required = getattr(self.pm.get_plugin(name), REQUIRES_ATTRIBUTE, ())
            for needed in (required,) if isinstance(required, str) else required:
                if needed in self.names[:position]:
                    continue
                why = "it comes after" if needed in self.names else "it is not in the chain"
                problems.append(f"{CHAIN_SETTING}: {name} needs the {needed} "
                                f"plugin before it ({why})")
        return problems


#: pluggy hookimpl options the core does not honour: it calls every implementation itself, in
#: chain order (so order comes from ``plugins.chain``, not ``tryfirst``/``trylast``), and
#: awaits what they return (so there is no generator to wrap the others with).
_UNSUPPORTED_OPTIONS = {
    "hookwrapper": "wrappers are not supported: use wrap_upstream to wrap the upstream call",
    "wrapper": "wrappers are not supported: use wrap_upstream to wrap the upstream call",
    "tryfirst": "the order is plugins.chain's: move the plugin in the chain instead",
    "trylast": "the order is plugins.chain's: move the plugin in the chain instead",
}


def _unsupported_options(plugin_name: str, hooks: Any) -> list[str]:
    """One line per hookimpl option of ``plugin_name`` the core would silently ignore."""
    problems = []
    for hook in hooks:
        for impl in hook.get_hookimpls():
            if impl.plugin_name != plugin_name:
                continue
            for option, why in _UNSUPPORTED_OPTIONS.items():
                if getattr(impl, option, False):
                    problems.append(f"{CHAIN_SETTING}: plugin {plugin_name!r}: "
                                    f"{hook.name} is marked {option}=True; {why}")
    return problems


async def await_me_maybe(value: Any) -> Any:
    """Await ``value`` if it is awaitable, else return it (datasette's pattern)."""
    if inspect.isawaitable(value):
        return await value
    return value

