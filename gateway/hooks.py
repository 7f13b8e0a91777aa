"""The hook caller: pluggy underneath, with isolation of each implementation.

pluggy stops at the first exception and awaits nothing; an observer must do neither,
so :meth:`Hooks.notify` calls each implementation on its own, logs failures with the
plugin's name, and runs coroutine results in the background under a timeout.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Iterable
from importlib.metadata import entry_points
from time import perf_counter
from typing import Any

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
        self.pm.register(plugin, name=name)
        self.pm.check_pending()  # an implementation of a hook that does not exist is an error
        self.active = frozenset(name for name, caller in vars(self.pm.hook).items() if caller.get_hookimpls())

    def has(self, hook: str) -> bool:
        """Whether any plugin implements ``hook``: callers skip building costly arguments."""
        return hook in self.active

    def notify(self, hook: str, **kwargs: Any) -> None:
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
