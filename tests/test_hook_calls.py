"""Hook call sites are checked against the hookspecs, as pluggy checks implementations:
a wrong call is the gateway's bug and fails where it is made, never as a plugin's
``hook_failed``; a hook wrapper, which would never run, is refused at registration."""

from __future__ import annotations

import ast
import inspect
from collections.abc import Iterator, MutableMapping
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pluggy
import pytest
from structlog.testing import capture_logs

from gateway import hookspecs
from gateway.hooks import Hooks
from gateway.hookspecs import HOOK_NAMES, hookimpl
from gateway.registry import PluginError

GATEWAY = Path(__file__).resolve().parent.parent / "gateway"


class Listener:
    def __init__(self) -> None:
        self.pids: list[int] = []

    @hookimpl
    def wxgate_shutdown(self, pid: int) -> None:
        self.pids.append(pid)

    @hookimpl
    def wxgate_request_started(self, app: str) -> None:  # asks for less than the call must pass
        raise AssertionError("not called: the call was refused before any implementation ran")


@pytest.fixture
def log() -> Iterator[list[MutableMapping[str, Any]]]:
    with capture_logs() as events:
        yield events


# --- an unknown hook name -------------------------------------------------------------------


@pytest.mark.parametrize("listened", [False, True])
def test_notify_refuses_an_unknown_hook_name(listened: bool) -> None:
    hooks = Hooks(plugins=[Listener()] if listened else [], load_entry_points=False)
    with pytest.raises(ValueError, match=r"no wxgate hook is named 'wxgate_shutdwn'.*did you mean 'wxgate_shutdown'"):
        hooks.notify("wxgate_shutdwn", pid=1)


def test_has_refuses_an_unknown_hook_name() -> None:
    hooks = Hooks(plugins=[Listener()], load_entry_points=False)
    with pytest.raises(ValueError, match="no wxgate hook is named 'wxgate_user_logged'"):
        hooks.has("wxgate_user_logged")
    with pytest.raises(ValueError, match=r"'nothing' .*; the hooks are wxgate_config_reloaded, wxgate_phone_bound, "):
        hooks.has("nothing")
    assert hooks.has("wxgate_shutdown")
    assert not hooks.has("wxgate_user_logged_in")


# --- arguments that are not exactly the spec's ---------------------------------------------


@pytest.mark.parametrize("listened", [False, True])
def test_notify_refuses_a_call_without_an_argument_of_the_spec(
    listened: bool, log: list[MutableMapping[str, Any]]
) -> None:
    listener = Listener()
    hooks = Hooks(plugins=[listener] if listened else [], load_entry_points=False)
    with pytest.raises(TypeError) as caught:
        hooks.notify("wxgate_request_started", request_id="r1", app="demo", flow="login")
    assert str(caught.value) == (
        "hook wxgate_request_started called with the wrong arguments: missing client_ip "
        "(its hookspec takes request_id, app, flow, client_ip)"
    )
    with pytest.raises(TypeError, match="wxgate_shutdown called with the wrong arguments: missing pid"):
        hooks.notify("wxgate_shutdown")
    assert listener.pids == []
    assert [event for event in log if event["event"] == "hook_failed"] == []  # no plugin is blamed


@pytest.mark.parametrize("listened", [False, True])
def test_notify_refuses_an_argument_the_spec_does_not_have(listened: bool) -> None:
    listener = Listener()
    hooks = Hooks(plugins=[listener] if listened else [], load_entry_points=False)
    with pytest.raises(TypeError, match=r"wxgate_shutdown called with the wrong arguments: unexpected app, signal \("):
        hooks.notify("wxgate_shutdown", pid=1, signal="TERM", app="demo")
    with pytest.raises(TypeError, match="missing client_ip; unexpected ip"):
        hooks.notify("wxgate_request_started", request_id="r1", app="demo", flow="login", ip="127.0.0.1")
    assert listener.pids == []
    hooks.notify("wxgate_shutdown", pid=7)  # exactly the spec's arguments
    assert listener.pids == ([7] if listened else [])


def test_every_call_site_in_the_gateway_names_a_hook_and_its_arguments() -> None:
    """Read from the source, so that call sites no test reaches are checked too (the
    suite exercises the others at run time, where notify checks every call)."""
    specs = {name: frozenset(inspect.signature(getattr(hookspecs, name)).parameters) for name in HOOK_NAMES}
    sites = list(_hook_call_sites())
    assert len(sites) >= 9, sites  # the scan finds the calls it checks
    problems = []
    for where, method, hook, keywords, splat in sites:
        if hook not in specs:
            problems.append(f"{where}: {method}({hook!r}): no such hook")
        elif method == "notify" and not (keywords <= specs[hook] if splat else keywords == specs[hook]):
            problems.append(f"{where}: notify({hook!r}) passes {sorted(keywords)}, the spec {sorted(specs[hook])}")
    assert not problems, problems


def _hook_call_sites() -> Iterator[tuple[str, str, str, frozenset[str], bool]]:
    """(file:line, notify or has, hook name, keyword names, whether ``**`` adds more) of each
    ``...hooks.notify(...)`` and ``...hooks.has(...)`` in gateway/."""
    for path in sorted(GATEWAY.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        constants = {
            target.id: node.value.value
            for node in tree.body
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
            for target in node.targets
            if isinstance(target, ast.Name)
        }
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            if node.func.attr not in ("notify", "has") or not ast.unparse(node.func.value).endswith("hooks"):
                continue
            where = f"{path.relative_to(GATEWAY.parent)}:{node.lineno}"
            first = node.args[0] if node.args else None
            if isinstance(first, ast.Constant):
                hook: Any = first.value
            elif isinstance(first, ast.Name):
                hook = constants.get(first.id)
            else:
                hook = None
            assert isinstance(hook, str), f"{where}: a hook name this test cannot read: give it as a literal"
            keywords = frozenset(k.arg for k in node.keywords if k.arg is not None)
            yield where, node.func.attr, hook, keywords, any(k.arg is None for k in node.keywords)


# --- hook wrappers ------------------------------------------------------------------------


class Wrapper:
    @hookimpl(wrapper=True)
    def wxgate_request_finished(self, status: int) -> Iterator[None]:
        yield


class OldStyleWrapper:
    @hookimpl(hookwrapper=True)
    def wxgate_shutdown(self, pid: int) -> Iterator[None]:
        yield


@pytest.mark.parametrize(
    ("plugin", "hook", "option"),
    [
        (Wrapper(), "wxgate_request_finished", "wrapper=True"),
        (OldStyleWrapper(), "wxgate_shutdown", "hookwrapper=True"),
    ],
)
def test_a_hook_wrapper_is_refused_at_registration(plugin: object, hook: str, option: str) -> None:
    hooks = Hooks(load_entry_points=False)
    with pytest.raises(pluggy.PluginValidationError) as caught:
        hooks.register(plugin)
    message = str(caught.value)
    assert f"'tests.test_hook_calls.{type(plugin).__name__}'" in message
    assert f"implements {hook} as a hook wrapper (@hookimpl({option}))" in message
    assert "wxgate hooks are observers only" in message
    assert hooks.pm.get_plugin(f"tests.test_hook_calls.{type(plugin).__name__}") is None  # not left registered
    assert not hooks.has(hook)


def test_a_hook_wrapper_from_an_entry_point_stops_the_gateway(monkeypatch: pytest.MonkeyPatch) -> None:
    ep = EntryPoint(name="wrapping", value="tests.test_hook_calls:WRAPPER", group="wxgate.hooks")
    monkeypatch.setattr("gateway.hooks.entry_points", lambda group: [ep])
    with pytest.raises(PluginError) as caught:
        Hooks()
    message = str(caught.value)
    assert message.startswith(
        "hook plugin wrapping = tests.test_hook_calls:WRAPPER (distribution unknown distribution)"
    )
    assert "plugin 'unknown distribution:wrapping' implements wxgate_request_finished as a hook wrapper" in message


WRAPPER = Wrapper()
