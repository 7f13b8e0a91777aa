"""Lifecycle hooks: each fires with its documented arguments; a failing or slow plugin
is isolated and named in the log; a bad implementation is refused at registration."""

from __future__ import annotations

import asyncio
from typing import Any

import pluggy
import pytest
import structlog
from structlog.testing import capture_logs

from gateway.hooks import Hooks
from gateway.hookspecs import HOOK_NAMES, hookimpl
from gateway.sandbox.world import phone_for
from gateway.testing import GatewayTestCase


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def of(self, hook: str) -> list[dict[str, Any]]:
        return [kwargs for name, kwargs in self.calls if name == hook]

    @hookimpl
    def wxgate_startup(self, config_digest: str, apps: list[str], pid: int) -> None:
        self.calls.append(("startup", {"digest": config_digest, "apps": apps, "pid": pid}))

    @hookimpl
    def wxgate_request_started(self, request_id: str, app: str, flow: str) -> None:
        self.calls.append(("started", {"request_id": request_id, "app": app, "flow": flow}))

    @hookimpl
    def wxgate_request_finished(
        self, request_id: str, flow: str, status: int, error: str | None, steps: dict[str, float]
    ) -> None:
        self.calls.append(
            (
                "finished",
                {"request_id": request_id, "flow": flow, "status": status, "error": error, "steps": list(steps)},
            )
        )

    @hookimpl
    def wxgate_step_failed(self, flow: str, step: str, error: str, status: int) -> None:
        self.calls.append(("step_failed", {"flow": flow, "step": step, "error": error, "status": status}))

    @hookimpl
    def wxgate_user_logged_in(
        self, app: str, appid: str, openid: str, unionid: str | None, first_login: bool | None
    ) -> None:
        self.calls.append(("logged_in", {"app": app, "appid": appid, "openid": openid, "first_login": first_login}))

    @hookimpl
    def wxgate_phone_bound(self, openid: str, masked_phone: str, country_code: str) -> None:
        self.calls.append(("phone_bound", {"openid": openid, "masked": masked_phone, "cc": country_code}))

    @hookimpl
    def wxgate_shutdown(self, pid: int) -> None:
        self.calls.append(("shutdown", {"pid": pid}))


class Broken:
    @hookimpl
    def wxgate_user_logged_in(self, openid: str) -> None:
        raise RuntimeError("plugin bug")


class Slow:
    def __init__(self) -> None:
        self.finished = False

    @hookimpl
    async def wxgate_request_finished(self, status: int) -> None:
        await asyncio.sleep(3)
        self.finished = True


RECORDER = Recorder()
SLOW = Slow()


class HooksTest(GatewayTestCase):
    hook_plugins = [RECORDER, Broken(), SLOW]

    def setUp(self) -> None:
        RECORDER.calls.clear()
        # format_exc_info: hook_failed's traceback is asserted on as the log shows it
        self.logs = self.enterContext(capture_logs(processors=[structlog.processors.format_exc_info]))
        super().setUp()
        self.gateway.hooks.timeout = 1.0  # bounds the Slow plugin's background calls

    def test_hooks_fire_with_their_arguments(self) -> None:
        assert RECORDER.of("startup")[0]["apps"] == ["demo"]
        first = self.login("hope")
        again = self.login("hope")
        logins = RECORDER.of("logged_in")
        assert [c["first_login"] for c in logins] == [True, False]
        assert logins[0] == {
            "app": "demo",
            "appid": "wx0000000000demo0",
            "openid": first["openid"],
            "first_login": True,
        }
        device = self.get_phone_number("hope")
        status, _, response = self.call(
            "/v1/demo/phone", {"encryptedData": device["encryptedData"], "iv": device["iv"]}, token=again["token"]
        )
        assert status == 200
        masked = phone_for("hope")[:3] + "****" + phone_for("hope")[-4:]
        assert RECORDER.of("phone_bound") == [{"openid": first["openid"], "masked": masked, "cc": "86"}]
        started = RECORDER.of("started")
        finished = RECORDER.of("finished")
        assert [c["flow"] for c in started] == ["login", "login", "phone"]
        assert finished[-1]["request_id"] == response.headers["X-Request-Id"] == started[-1]["request_id"]
        assert finished[-1]["status"] == 200
        assert finished[-1]["steps"] == [
            "check_session",
            "decrypt",
            "watermark",
            "mask_guard",
            "persist_phone",
            "webhook",
            "respond",
        ]

    def test_step_failed_names_the_step(self) -> None:
        token = self.login("ida")["token"]
        status, _, _ = self.call("/v1/demo/phone", {"encryptedData": "AAAA", "iv": "AAAA"}, token=token)
        assert status == 400
        assert RECORDER.of("step_failed") == [
            {"flow": "phone", "step": "decrypt", "error": "invalid_encrypted_data", "status": 400}
        ]
        assert RECORDER.of("finished")[-1]["error"] == "invalid_encrypted_data"

    def test_failing_and_slow_plugins_are_isolated(self) -> None:
        status, body, _ = self.call("/v1/demo/login", {"code": self.wx_login("joe")})
        assert status == 200, body  # Broken raised in wxgate_user_logged_in
        # Slow sleeps 3 s after the answer, bounded by the hooks' timeout (1 s): a gateway that
        # awaited it would answer only after that timeout, logged. (Not a stopwatch: a loaded
        # CI machine may take a second for the login itself.)
        assert not [e for e in self.logs if e["event"] == "hook_timeout"], "the answer waited for the Slow hook"
        assert not SLOW.finished
        assert len(RECORDER.of("logged_in")) == 1  # the other plugins still ran
        self.gateway.hooks.timeout = 0.2
        self.call("/v1/demo/login", {"code": self.wx_login("joe")})

        async def timed_out() -> None:  # 0.2 s after the answer, however late the loop is
            for _ in range(200):
                if any(e["event"] == "hook_timeout" and e["hook"] == "wxgate_request_finished" for e in self.logs):
                    return
                await asyncio.sleep(0.05)

        self.io_loop.run_sync(timed_out, timeout=30)
        events = self.logs
        failed = [e for e in events if e["event"] == "hook_failed"]
        assert failed
        assert failed[0]["hook"] == "wxgate_user_logged_in"
        assert "Broken" in failed[0]["plugin"]
        assert "RuntimeError: plugin bug" in failed[0]["exception"]
        assert any(e["event"] == "hook_timeout" and e["hook"] == "wxgate_request_finished" for e in events)
        assert not SLOW.finished


def test_every_hook_is_exercised_here() -> None:
    implemented = {name for name in dir(Recorder) if name.startswith("wxgate_")}
    # config_reloaded is exercised by the reload tests
    assert set(HOOK_NAMES) - implemented <= {"wxgate_config_reloaded"}


def test_an_implementation_with_unknown_arguments_is_refused() -> None:
    class Typo:
        @hookimpl
        def wxgate_user_logged_in(self, open_id: str) -> None: ...

    with pytest.raises(pluggy.PluginValidationError) as caught:
        Hooks(plugins=[Typo()], load_entry_points=False)
    assert str(caught.value) == (
        f"plugin 'tests.test_hooks.{Typo.__qualname__}' implements wxgate_user_logged_in(open_id), "
        "but wxgate_user_logged_in has no argument 'open_id' (did you mean 'openid'?); "
        "it takes any of: request_id, app, appid, openid, unionid, first_login"
    )


def test_an_implementation_of_no_hook_is_refused() -> None:
    class Misnamed:
        @hookimpl
        def wxgate_user_loggedin(self, openid: str) -> None: ...

    with pytest.raises(pluggy.PluginValidationError) as caught:
        Hooks(plugins=[Misnamed()], load_entry_points=False)
    message = str(caught.value)
    assert message.startswith(
        f"plugin 'tests.test_hooks.{Misnamed.__qualname__}' implements 'wxgate_user_loggedin', which is no wxgate hook "
        "(did you mean 'wxgate_user_logged_in'?); the hooks are wxgate_startup, "
    )
    assert message.endswith("(docs/hooks.md)")


def test_a_refused_plugin_is_not_left_half_registered() -> None:
    class Partly:
        @hookimpl
        def wxgate_shutdown(self, pid: int) -> None: ...

        @hookimpl
        def wxgate_startup(self, digest: str) -> None: ...

    hooks = Hooks(load_entry_points=False)
    with pytest.raises(pluggy.PluginValidationError, match="it takes any of: config_digest, apps, pid"):
        hooks.register(Partly())
    assert not hooks.has("wxgate_shutdown")
    assert hooks.pm.get_plugins() == set()


def test_an_implementation_may_take_a_subset_and_optional_extras() -> None:
    class Fine:
        @hookimpl
        def wxgate_request_finished(self, status: int, extra: str = "") -> None: ...

    hooks = Hooks(plugins=[Fine()], load_entry_points=False)
    assert hooks.has("wxgate_request_finished")


def test_hooks_run_in_pluggy_order() -> None:
    order: list[str] = []

    class First:
        @hookimpl(tryfirst=True)
        def wxgate_shutdown(self, pid: int) -> None:
            order.append("first")

    class Plain:
        @hookimpl
        def wxgate_shutdown(self, pid: int) -> None:
            order.append("plain")

    class Last:
        @hookimpl(trylast=True)
        def wxgate_shutdown(self, pid: int) -> None:
            order.append("last")

    Hooks(plugins=[Last(), Plain(), First()], load_entry_points=False).notify("wxgate_shutdown", pid=1)
    assert order == ["first", "plain", "last"]
