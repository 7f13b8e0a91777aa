"""The hook caller: pluggy underneath, with isolation of each implementation.

pluggy stops at the first exception and awaits nothing; an observer must do neither,
so :meth:`Hooks.notify` calls each implementation on its own, logs failures with the
plugin's name, and runs coroutine results in the background under a timeout.

pluggy checks implementations against the hookspecs; :meth:`Hooks.notify` checks the
gateway's own call sites against them too, so a misspelled hook or a missing argument
fails where it is written instead of as a ``hook_failed`` blamed on a plugin.
"""

from __future__ import annotations

import asyncio
import difflib
import inspect
from collections.abc import Awaitable, Iterable, Set
from importlib.metadata import entry_points
from time import perf_counter
from typing import Any, NoReturn

import pluggy

from gateway import hookspecs
from gateway.logs import get_logger
from gateway.registry import PluginError

HOOK_GROUP = "wxgate.hooks"
SLOW_SYNC_HOOK_SECONDS = 0.1

log = get_logger("wxgate.hooks")


class Hooks:
    def __init__(self, plugins: Iterable[object] = (), load_entry_points: bool = True, timeout: float = 5.0) -> None:
        self.pm = pluggy.PluginManager("wxgate")
        self.pm.add_hookspecs(hookspecs)
        # a call passes every argument of the spec: any implementation may ask for any of them
        self._arguments: dict[str, frozenset[str]] = {
            name: frozenset(caller.spec.argnames) for name, caller in vars(self.pm.hook).items() if caller.spec
        }
        self.timeout = timeout
        self._tasks: set[asyncio.Task[None]] = set()
        # hooks with at least one implementation: every request asks, most have none
        self.active: frozenset[str] = frozenset()
        if load_entry_points:
            for ep in entry_points(group=HOOK_GROUP):
                dist = ep.dist.name if ep.dist is not None else "unknown distribution"
                try:
                    self.register(ep.load(), name=f"{dist}:{ep.name}")
                except Exception as exc:
                    raise PluginError(
                        f"hook plugin {ep.name} = {ep.value} (distribution {dist}) is invalid: {exc}"
                    ) from exc
        for plugin in plugins:
            self.register(plugin)

    def register(self, plugin: object, name: str | None = None) -> None:
        if name is None:  # a readable name for the logs: the module, or module.Class of an instance
            kind = plugin if inspect.ismodule(plugin) or inspect.isclass(plugin) else type(plugin)
            name = kind.__name__ if inspect.ismodule(kind) else f"{kind.__module__}.{kind.__qualname__}"
            name = name if self.pm.get_plugin(name) is None else f"{name}#{id(plugin)}"
        self._refuse_mistakes(plugin, name)
        self.pm.register(plugin, name=name)
        self._refuse_wrappers(plugin, name)
        self.pm.check_pending()  # an implementation of a hook that does not exist is an error
        self.active = frozenset(name for name, caller in vars(self.pm.hook).items() if caller.get_hookimpls())

    def _refuse_mistakes(self, plugin: object, name: str) -> None:
        """A misspelled hook or argument, explained before pluggy registers anything of the plugin:
        the closest hook name, or the arguments the hook has."""
        for attribute in dir(plugin):
            options = self.pm.parse_hookimpl_opts(plugin, attribute)
            if options is None:
                continue
            hook = options.get("specname") or attribute
            expected = self._arguments.get(hook)
            if expected is None:
                close = difflib.get_close_matches(hook, self._arguments, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise pluggy.PluginValidationError(
                    plugin,
                    f"plugin {name!r} implements {hook!r}, which is no wxgate hook{hint}; the hooks are "
                    f"{', '.join(hookspecs.HOOK_NAMES)} (docs/hooks.md)",
                )
            function = getattr(plugin, attribute)
            asked = [
                p.name
                for p in inspect.signature(function).parameters.values()
                if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
            ]
            if inspect.isclass(plugin) and asked[:1] in (["self"], ["cls"]):
                asked = asked[1:]
            unknown = [argument for argument in asked if argument not in expected]
            if unknown:
                guesses = {a: difflib.get_close_matches(a, expected, n=1) for a in unknown}
                named = ", ".join(f"{a!r}" + (f" (did you mean {g[0]!r}?)" if g else "") for a, g in guesses.items())
                spec = getattr(self.pm.hook, hook).spec.argnames
                raise pluggy.PluginValidationError(
                    plugin,
                    f"plugin {name!r} implements {hook}({', '.join(asked)}), but {hook} has no argument {named}; "
                    f"it takes any of: {', '.join(spec)}",
                )

    def _refuse_wrappers(self, plugin: object, name: str) -> None:
        """notify() calls each implementation as a plain function: a wrapper's body would never run."""
        for caller in self.pm.get_hookcallers(plugin) or ():
            for impl in caller.get_hookimpls():
                if impl.plugin is plugin and (impl.wrapper or impl.hookwrapper):
                    self.pm.unregister(plugin)
                    kind = "wrapper=True" if impl.wrapper else "hookwrapper=True"
                    raise pluggy.PluginValidationError(
                        plugin,
                        f"plugin {name!r} implements {caller.name} as a hook wrapper (@hookimpl({kind})): "
                        "wxgate hooks are observers only and never run wrappers; use a plain @hookimpl",
                    )

    def has(self, hook: str) -> bool:
        """Whether any plugin implements ``hook``: callers skip building costly arguments."""
        if hook not in self._arguments:
            self._refuse_call(hook, frozenset())
        return hook in self.active

    def notify(self, hook: str, **kwargs: Any) -> None:
        """Call every implementation of ``hook`` with ``kwargs``, which must be exactly its arguments.

        Checked on every call, listened to or not, so a wrong call site fails in any test
        that reaches it rather than only once a plugin implements the hook. Comparing the
        keys with the spec's set is cheaper than a cache of checked calls would be: its key
        (the hook and the argument names) costs a tuple built and hashed per call.
        """
        if kwargs.keys() != self._arguments.get(hook):
            self._refuse_call(hook, kwargs.keys())
        if hook not in self.active:
            return
        impls = getattr(self.pm.hook, hook).get_hookimpls()
        for impl in reversed(impls):  # pluggy's call order (tryfirst first, trylast last)
            started = perf_counter()
            try:
                result = impl.function(**{name: kwargs[name] for name in impl.argnames})
            except Exception:
                log.exception("hook_failed", hook=hook, plugin=impl.plugin_name)
                continue
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(self._bounded(result, hook, impl.plugin_name))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            elif perf_counter() - started > SLOW_SYNC_HOOK_SECONDS:
                log.warning("hook_slow", hook=hook, plugin=impl.plugin_name, ms=round((perf_counter() - started) * 1e3))

    def _refuse_call(self, hook: str, given: Set[str]) -> NoReturn:
        """A call site that does not match the hookspecs is a bug in the gateway, not in a plugin."""
        expected, given = self._arguments.get(hook), frozenset(given)
        if expected is None:
            close = difflib.get_close_matches(hook, self._arguments, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; the hooks are {', '.join(sorted(self._arguments))}"
            raise ValueError(f"no wxgate hook is named {hook!r} (gateway/hookspecs.py){hint}")
        problems = []
        if missing := sorted(expected - given):
            problems.append(f"missing {', '.join(missing)}")
        if extra := sorted(given - expected):
            problems.append(f"unexpected {', '.join(extra)}")
        raise TypeError(
            f"hook {hook} called with the wrong arguments: {'; '.join(problems)} "
            f"(its hookspec takes {', '.join(getattr(self.pm.hook, hook).spec.argnames)})"
        )

    async def _bounded(self, awaitable: Awaitable[Any], hook: str, plugin: str) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                await awaitable
        except TimeoutError:
            log.warning("hook_timeout", hook=hook, plugin=plugin, timeout_s=self.timeout)
        except Exception:
            log.exception("hook_failed", hook=hook, plugin=plugin)

    async def drain(self, grace: float = 5.0) -> None:
        """Wait (bounded) for background hook calls, at shutdown."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace)
