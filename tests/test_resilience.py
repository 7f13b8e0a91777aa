"""Failing safe: the upstream circuit breaker, and refusing replayed encrypted data."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from gateway.sandbox.world import phone_for
from gateway.testing import GatewayTestCase
from tests.helpers import free_port

CONFIG = """
storage: {{plugin: memory}}
pipelines:
  login: [code2session, issue_session]
  phone:
    - check_session
    - decrypt: {{kind: phone}}
    - watermark: {{max_age: 600, replay: reject}}
    - respond
apps:
  demo: {{appid: wx0000000000demo0, secret: demo-secret-123, upstream: sandbox, circuit_failures: 3,
         circuit_cooldown: 0.5}}
  down: {{appid: wx0000000000down0, secret: down-secret-123, upstream: "http://127.0.0.1:{port}",
         circuit_failures: 3, circuit_cooldown: 0.5}}
"""


class ResilienceTest(GatewayTestCase):
    def get_config(self) -> Any:
        self.config_text = CONFIG.format(port=free_port())
        return super().get_config()

    def sleep(self, seconds: float) -> None:
        self.io_loop.run_sync(lambda: asyncio.sleep(seconds))

    def test_circuit_opens_under_sustained_failure_and_recovers(self) -> None:
        for _ in range(3):
            assert self.call("/v1/down/login", {"code": "abc"})[1]["error"]["code"] == "upstream_unreachable"
        started = time.monotonic()
        status, body, response = self.call("/v1/down/login", {"code": "abc"})
        assert (status, body["error"]["code"]) == (503, "upstream_circuit_open")
        assert 1 <= int(response.headers["Retry-After"]) <= 2
        assert time.monotonic() - started < 0.2  # failed fast, no connection attempted
        assert self.gateway.apps["down"].wechat.calls["jscode2session"] == 3
        self.sleep(0.6)
        # half-open: one trial call; still down, so the circuit opens again
        assert self.call("/v1/down/login", {"code": "abc"})[1]["error"]["code"] == "upstream_unreachable"
        assert self.call("/v1/down/login", {"code": "abc"})[1]["error"]["code"] == "upstream_circuit_open"
        # the other app's upstream is unaffected
        assert self.call("/v1/demo/login", {"code": self.wx_login("ok")})[0] == 200

    def test_busy_wechat_opens_the_circuit_then_a_success_closes_it(self) -> None:
        self.arm_fault("jscode2session", errcode=-1, count=3)
        for _ in range(3):
            assert self.call("/v1/demo/login", {"code": self.wx_login("busy")})[1]["error"]["code"] == "upstream_busy"
        assert self.call("/v1/demo/login", {"code": "abc"})[1]["error"]["code"] == "upstream_circuit_open"
        self.sleep(0.6)
        assert self.call("/v1/demo/login", {"code": self.wx_login("busy")})[0] == 200
        assert self.gateway.apps["demo"].wechat.circuit.state == "closed"
        # errors about the request itself (a bad code) do not count as WeChat failing
        for _ in range(5):
            assert self.call("/v1/demo/login", {"code": "0" * 32})[1]["error"]["code"] == "invalid_code"
        assert self.gateway.apps["demo"].wechat.circuit.state == "closed"

    def test_replayed_encrypted_data_is_refused(self) -> None:
        token = self.login("rex")["token"]
        device = self.get_phone_number("rex")
        fields = {"encryptedData": device["encryptedData"], "iv": device["iv"]}
        status, body, _ = self.call("/v1/demo/phone", fields, token=token)
        assert (status, body["purePhoneNumber"]) == (200, phone_for("rex"))
        status, body, _ = self.call("/v1/demo/phone", fields, token=token)
        assert (status, body["error"]["code"]) == (422, "replayed")
        # the same data with '+' turned into spaces is the same data
        damaged = {**fields, "encryptedData": fields["encryptedData"].replace("+", " ")}
        assert self.call("/v1/demo/phone", damaged, token=token)[1]["error"]["code"] == "replayed"
        fresh = self.get_phone_number("rex")
        assert (
            self.call("/v1/demo/phone", {"encryptedData": fresh["encryptedData"], "iv": fresh["iv"]}, token=token)[0]
            == 200
        )


def test_replay_reject_needs_a_window() -> None:
    import pytest

    from wxgate_plugins.steps.watermark import WatermarkOptions

    with pytest.raises(ValueError, match="replay: reject needs max_age"):
        WatermarkOptions(replay="reject")


def _sleepy_step() -> type:
    from typing import ClassVar

    from gateway import Context, Step, StepOptions

    class SleepyStep(Step[StepOptions]):
        name: ClassVar[str] = "sleepy"
        version: ClassVar[str] = "0.0.1"

        async def __call__(self, ctx: Context) -> None:
            await asyncio.sleep(30)

    return SleepyStep


def pipeline_timeout_config() -> Any:
    """A 0.3 s request timeout and a login pipeline with a step that hangs."""
    from gateway.config import parse_config
    from gateway.registry import Registry

    registry = Registry.discover(extra_steps={"sleepy": _sleepy_step()})
    text = """
server: {request_timeout: 0.3}
storage: {plugin: memory}
pipelines:
  login: [code2session, sleepy, issue_session]
  phone: [check_session, {decrypt: {kind: phone}}, respond]
apps:
  demo: {appid: wx0000000000demo0, secret: demo-secret-123, upstream: sandbox}
"""
    return parse_config(text, "<timeout>", registry)


class PipelineTimeoutTest(GatewayTestCase):
    def get_config(self) -> Any:
        return pipeline_timeout_config()

    def test_a_hanging_step_is_cut_off_and_named(self) -> None:
        started = time.monotonic()
        status, body, _ = self.call("/v1/demo/login", {"code": self.wx_login("hang")})
        assert (status, body["error"]["code"]) == (504, "pipeline_timeout")
        assert time.monotonic() - started < 2
        # the process keeps serving
        assert self.call("/v1/demo/phone", {}, token="x")[1]["error"]["code"] == "session_invalid"


class CircuitTrialCancelledTest(GatewayTestCase):
    """Was: the request timeout cancelled a half-open circuit's trial call, which then
    held the trial slot for good: every later call got 503 upstream_circuit_open."""

    config_text = """
server: {request_timeout: 0.5}
storage: {plugin: memory}
pipelines:
  login: [code2session, issue_session]
apps:
  demo: {appid: wx0000000000demo0, secret: demo-secret-123, upstream: sandbox, timeout: 5,
         circuit_failures: 1, circuit_cooldown: 0.3}
"""

    def sleep(self, seconds: float) -> None:
        self.io_loop.run_sync(lambda: asyncio.sleep(seconds))

    def test_a_trial_call_cut_off_by_the_request_timeout_frees_the_circuit(self) -> None:
        self.arm_fault("jscode2session", errcode=-1, count=1)
        assert self.call("/v1/demo/login", {"code": self.wx_login("a")})[1]["error"]["code"] == "upstream_busy"
        self.sleep(0.4)  # half-open: the next call is the trial
        self.arm_fault("jscode2session", delay=1.0, count=1)
        status, body, _ = self.call("/v1/demo/login", {"code": self.wx_login("b")})
        assert (status, body["error"]["code"]) == (504, "pipeline_timeout")
        self.sleep(1.2)  # the delayed answer has come and gone
        status, body, _ = self.call("/v1/demo/login", {"code": self.wx_login("c")})
        assert status == 200, body
        assert self.gateway.apps["demo"].wechat.circuit.state == "closed"
