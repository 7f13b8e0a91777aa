"""Checks at load that each step of a pipeline comes after the steps it depends on.

Steps declare what they need and give (:data:`gateway.step.Fact`, see
:class:`gateway.step.Step`). A step put before the one that gives what it needs would
otherwise see an empty ``ctx.data`` or no session and answer wrongly, or 401, at run
time; here it is a configuration error naming the file, the line and the fix.

A step that declares nothing (``gives`` is ``None``) might give anything: the steps
after it are not checked, so a pipeline that worked before declarations still loads.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.errors import ConfigError
from gateway.step import FACTS, Fact

if TYPE_CHECKING:
    from gateway.config import ResolvedStep

# each kind of open data is open data: a step that needs `data` may follow any of them
IMPLIES: Mapping[Fact, tuple[Fact, ...]] = {"phone": ("data",), "userinfo": ("data",), "share": ("data",)}

# what the operator reads: what is missing, and where the step belongs
EXPLAINED: Mapping[Fact, tuple[str, str]] = {
    "session": ("a session", "put it after code2session or check_session"),
    "phone": ("a phone number", "put it after decrypt or phone_code"),
    "userinfo": ("the user's info", "put it after decrypt"),
    "share": ("share info", "put it after decrypt"),
    "data": ("decrypted open data", "put it after decrypt or phone_code"),
    "response": ("an answer to add to", "put it after respond, issue_session or session_info"),
}
_DECRYPT_KIND: Mapping[Fact, str] = {"phone": "phone", "userinfo": "userinfo", "share": "share"}


@dataclass(frozen=True, slots=True)
class Declared:
    """What one configured step needs and gives with its options (``gives`` None: undeclared)."""

    needs: tuple[Fact, ...]
    gives: tuple[Fact, ...] | None


def declared(step: ResolvedStep) -> Declared:
    """The step's declarations for its options, checked to name known facts."""
    cls: Any = step.cls
    needs, gives = cls.needs_for(step.options), cls.gives_for(step.options)
    for what, value in (("needs", needs), ("gives", gives)):
        if value is None and what == "gives":
            continue
        if not isinstance(value, tuple) or any(v not in FACTS for v in value):
            raise ConfigError(
                f"{step.where}: step {step.name!r} ({cls.__module__}.{cls.__qualname__}) declares {what} "
                f"{value!r} for its options: expected a tuple of {', '.join(map(repr, FACTS))}"
            )
    return Declared(needs=needs, gives=gives)


def mistakes(label: str, steps: Sequence[ResolvedStep]) -> list[str]:
    """One line per step whose needs no earlier step gives. ``label`` is the pipeline's
    dotted YAML path (``pipelines.phone``, ``apps.shop.pipelines.phone``)."""
    found: list[str] = []
    given: set[Fact] = set()
    unknown = False  # an undeclared step came before: it may give anything
    for i, step in enumerate(steps):
        declaration = declared(step)
        missing = [need for need in declaration.needs if need not in given]
        if missing and not unknown:
            need = missing[0]
            what, fix = EXPLAINED[need]
            message = f"{step.where}: {label}[{i}].{step.name} needs {what}: {fix}"
            if need in _DECRYPT_KIND and "data" in given:
                message += f" (the data before it may not be {what}: give decrypt `kind: {_DECRYPT_KIND[need]}`)"
            found.append(message)
        if declaration.gives is None:
            unknown = True
        else:
            given.update(_with_implied(declaration.gives))
    return found


def _with_implied(facts: Iterable[Fact]) -> set[Fact]:
    out: set[Fact] = set()
    for fact in facts:
        out.add(fact)
        out.update(IMPLIES.get(fact, ()))
    return out


def check_pipelines(
    flows: Mapping[str, Mapping[str, Sequence[ResolvedStep]]],
    shared: Mapping[str, Sequence[ResolvedStep]],
    defaults: Mapping[str, Sequence[ResolvedStep]],
) -> None:
    """Check every pipeline once, by where it is written: the file's top-level ones (even
    where every app replaces one: the file is still wrong), the built-in defaults, and each
    app's own; raise one :class:`ConfigError` listing every mistake found."""
    found: list[str] = []
    seen: set[int] = set()
    for flow, steps in (*shared.items(), *defaults.items()):
        if id(steps) not in seen:
            seen.add(id(steps))
            found += mistakes(f"pipelines.{flow}", steps)
    for app, app_flows in flows.items():
        for flow, steps in app_flows.items():
            if id(steps) not in seen:
                seen.add(id(steps))
                found += mistakes(f"apps.{app}.pipelines.{flow}", steps)
    if found:
        raise ConfigError("\n".join(found))
