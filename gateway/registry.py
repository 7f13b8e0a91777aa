"""Finds steps and storages through entry points and checks them before use.

Built-in plugins are registered in ``setup.cfg`` under the same entry-point groups a
third-party package uses (``wxgate.steps``, ``wxgate.storages``): there is no private
back door. A plugin that does not declare what the interface requires is refused
with an error naming its distribution.

A plugin installed from a distribution need not declare a ``version``: it then has the
distribution's, as Datasette reports its plugins' versions. The built-ins declare none,
so they are always the version of wxgate they ship in.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from pydantic import BaseModel

from gateway.step import FACTS, STEP_API_VERSION, Step, StepOptions
from gateway.storage import METHODS_ADDED_IN, STORAGE_API_VERSION, Storage, StorageOptions

STEP_GROUP = "wxgate.steps"
STORAGE_GROUP = "wxgate.storages"


class PluginError(Exception):
    """A plugin could not be loaded or does not fit the interface."""


# Classes given their distribution's version by _check. For a subclass that declares no
# version, that is not a declared one: it has its own distribution's, whichever is checked first.
_VERSIONS_FROM_DISTRIBUTIONS: set[type[Any]] = set()


def _declared_version(cls: type[Any]) -> object:
    for klass in cls.__mro__:
        if "version" in vars(klass) and klass not in _VERSIONS_FROM_DISTRIBUTIONS:
            return vars(klass)["version"]
    return None


def _origin(ep: EntryPoint | None) -> str:
    if ep is None:
        return "registered in code"
    dist = ep.dist.name if ep.dist is not None else "unknown distribution"
    return f"entry point {ep.group}:{ep.name} = {ep.value} (distribution {dist})"


def _check(
    kind: str,
    base: type[Any],
    options_base: type[BaseModel],
    api_version: int,
    obj: Any,
    name: str,
    ep: EntryPoint | None,
    added_in: Mapping[str, int] | None = None,
) -> None:
    added_in = added_in or {}
    where = _origin(ep)
    if not (inspect.isclass(obj) and issubclass(obj, base)):
        raise PluginError(f"{kind} {name!r} from {where} is not a subclass of {base.__module__}.{base.__name__}")
    if inspect.isabstract(obj):
        absent = sorted(getattr(obj, "__abstractmethods__", ()))
        message = f"{kind} {name!r} from {where} does not implement: {', '.join(absent)}"
        newer = sorted({added_in[m] for m in absent if m in added_in})
        if newer:
            message += (
                f" (added in {kind} interface version {newer[-1]}; it was written for an older version: "
                f"this wxgate provides version {api_version})"
            )
        raise PluginError(message)
    declared = getattr(obj, "name", None)
    if declared != name:
        raise PluginError(f"{kind} {name!r} from {where} declares name {declared!r}; they must be equal")
    version = _declared_version(obj)
    version_of_dist: str | None = None
    if version is None and ep is not None and ep.dist is not None:
        version = version_of_dist = ep.dist.version
    if not isinstance(version, str) or not version:
        raise PluginError(
            f"{kind} {name!r} from {where} declares no version string "
            "(only one installed from a distribution may leave it out: it then has the distribution's)"
        )
    options = getattr(obj, "Options", None)
    if not (inspect.isclass(options) and issubclass(options, options_base)):
        # the base refuses unknown keys: a typo in YAML must not pass silently
        raise PluginError(
            f"{kind} {name!r} from {where} must declare Options as a subclass of "
            f"{options_base.__module__}.{options_base.__name__}"
        )
    if base is Step:
        _check_declarations(kind, name, where, obj)
    declared_api = getattr(obj, "api_version", None)
    if declared_api != api_version:
        raise PluginError(
            f"{kind} {name!r} from {where} targets interface version {declared_api}; "
            f"this wxgate provides version {api_version}"
        )
    if version_of_dist is not None:  # on the class, where `wxgate version` and the plugin's own code read it
        cls: type[Any] = obj
        cls.version = version_of_dist
        _VERSIONS_FROM_DISTRIBUTIONS.add(cls)


def _check_declarations(kind: str, name: str, where: str, obj: Any) -> None:
    """needs and gives (class-level) name only known facts: a misspelled one would never be given."""
    for attribute in ("needs", "gives"):
        value = getattr(obj, attribute, None)
        if value is None and attribute == "gives":
            continue  # not declared: checked as a step written before declarations
        if not isinstance(value, tuple | list | frozenset | set) or any(v not in FACTS for v in value):
            raise PluginError(
                f"{kind} {name!r} from {where} declares {attribute} = {value!r}: expected a tuple of "
                f"{', '.join(map(repr, FACTS))}"
            )


@dataclass
class Registry:
    steps: dict[str, type[Step[Any]]] = field(default_factory=dict)
    storages: dict[str, type[Storage]] = field(default_factory=dict)

    origins: dict[str, str] = field(default_factory=dict)

    def add_step(self, cls: type[Step[Any]], ep: EntryPoint | None = None) -> None:
        name = ep.name if ep is not None else getattr(cls, "name", "?")
        _check("step", Step, StepOptions, STEP_API_VERSION, cls, name, ep)
        self._claim(f"step {name!r}", self.steps.get(name), cls, ep)
        self.steps[name] = cls

    def unknown_step(self, name: str) -> str:
        """Why ``name`` is no step, for the configuration error: a typo, or a plugin not (re)installed."""
        close = difflib.get_close_matches(name, self.steps, n=1)
        guess = f" (did you mean {close[0]!r}?)" if close else ""
        known = ", ".join(sorted(self.steps)) or "none"
        return (
            f"unknown step {name!r}{guess}; steps come from the {STEP_GROUP!r} entry points of the installed "
            f"packages: if {name!r} is your plugin's, install its package into this environment, and after "
            f"editing its entry points run `pip install -e .` again; `wxgate version` lists every step and where "
            f"it comes from; known steps: {known}"
        )

    def add_storage(self, cls: type[Storage], ep: EntryPoint | None = None) -> None:
        name = ep.name if ep is not None else getattr(cls, "name", "?")
        _check("storage", Storage, StorageOptions, STORAGE_API_VERSION, cls, name, ep, METHODS_ADDED_IN)
        self._claim(f"storage {name!r}", self.storages.get(name), cls, ep)
        self.storages[name] = cls

    def _claim(self, what: str, existing: type[Any] | None, cls: type[Any], ep: EntryPoint | None) -> None:
        """Two plugins may not share a name: one would silently replace the other (even a built-in)."""
        if existing is not None and existing is not cls:
            raise PluginError(f"{what} from {_origin(ep)} clashes with the one from {self.origins[what]}")
        self.origins[what] = _origin(ep)

    @classmethod
    def discover(cls, extra_steps: Mapping[str, type[Step[Any]]] | None = None) -> Registry:
        """Load every installed step and storage; ``extra_steps`` lets tests add their own."""
        registry = cls()
        for ep in entry_points(group=STEP_GROUP):
            registry.add_step(_load(ep), ep)
        for ep in entry_points(group=STORAGE_GROUP):
            registry.add_storage(_load(ep), ep)
        for step in (extra_steps or {}).values():
            registry.add_step(step)
        return registry


def _load(ep: EntryPoint) -> Any:
    try:
        return ep.load()
    except Exception as exc:  # a broken plugin must say which one it is
        raise PluginError(f"cannot load {_origin(ep)}: {type(exc).__name__}: {exc}") from exc
