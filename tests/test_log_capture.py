"""gateway.testing.capture_log: a plugin's test can assert that no hook_failed was logged."""

from __future__ import annotations

import pytest
import structlog

from gateway.hookspecs import hookimpl
from gateway.pytest_plugin import SUITE_LOG
from gateway.testing import GatewayTestCase, capture_log


class BrokenHook:
    @hookimpl
    def wxgate_user_logged_in(self, openid: str) -> None:
        raise RuntimeError("plugin bug")


class QuietHook:
    def __init__(self) -> None:
        self.openids: list[str] = []

    @hookimpl
    def wxgate_user_logged_in(self, openid: str) -> None:
        self.openids.append(openid)


class BrokenHookTest(GatewayTestCase):
    hook_plugins = [BrokenHook()]

    def test_a_failing_hook_is_seen_in_the_captured_log(self) -> None:
        assert self.login("ann")["token"]  # the request succeeds: hooks never fail it
        (failed,) = self.log_events.named("hook_failed")
        assert failed["hook"] == "wxgate_user_logged_in"
        assert "BrokenHook" in failed["plugin"]
        with pytest.raises(AssertionError, match=r"1 hook_failed event\(s\) logged:\n.*hook='wxgate_user_logged_in'"):
            self.log_events.assert_none("hook_failed")


QUIET = QuietHook()


class QuietHookTest(GatewayTestCase):
    hook_plugins = [QUIET]

    def test_a_working_hook_logs_no_failure(self) -> None:
        answer = self.login("bea")
        assert QUIET.openids[-1] == answer["openid"]
        self.log_events.assert_none()  # hook_failed by default
        requests = self.log_events.named("request")
        assert [r["flow"] for r in requests] == ["login"]


def test_events_are_captured_as_written_redacted_and_still_written() -> None:
    log = structlog.get_logger("acme")
    before = len(SUITE_LOG.getvalue())
    processors = list(structlog.get_config()["processors"])
    with capture_log() as captured:
        log.warning("acme_event", session_key="k" * 24, phone="13812345678", n=3)
    (event,) = captured.named("acme_event")
    assert event["session_key"] == "***"
    assert "13812345678" not in str(event["phone"])
    assert event["n"] == 3
    assert event["level"] == "warning"
    assert "acme_event" in SUITE_LOG.getvalue()[before:]  # the suite's leak check still reads it
    log.warning("acme_after")
    assert captured.named("acme_after") == []  # the recorder is gone after the block
    assert structlog.get_config()["processors"] == processors


def test_nested_captures_each_see_their_events() -> None:
    log = structlog.get_logger("acme")
    with capture_log() as outer:
        log.info("first")
        with capture_log() as inner:
            log.info("second")
        log.info("third")
    assert [e["event"] for e in outer] == ["first", "second", "third"]
    assert [e["event"] for e in inner] == ["second"]
