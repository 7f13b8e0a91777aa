"""Webhooks end to end: the step writes the outbox, the delivery worker POSTs to a real
receiver server, signed; retries, dead letters, filters and de-duplication."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from gateway.sandbox.world import phone_for
from gateway.testing import GatewayTestCase
from tests.webhook_receiver import Receiver

CONFIG = """
storage: {{plugin: memory}}
webhooks:
  backoff_initial: 0.05
  backoff_max: 0.2
  max_attempts: 4
  poll_interval: 0.05
  lease_seconds: 2
  endpoints:
    - {{name: crm, url: "{crm}", secret: "crm-secret-0123456789"}}
    - {{name: phones, url: "{phones}", secret: "phones-secret-0123456789", events: [phone.bound]}}
    - {{name: disabled, url: "", secret: ""}}
pipelines:
  login: [code2session, persist_user, issue_session, {{webhook: {{event: user.login}}}}]
  phone:
    - check_session
    - decrypt: {{kind: phone}}
    - watermark
    - mask_guard
    - persist_phone
    - webhook: {{event: phone.bound}}
    - respond
apps:
  demo: {{appid: wx0000000000demo0, secret: demo-secret-123, upstream: sandbox}}
"""


@pytest.fixture
def receivers(request: pytest.FixtureRequest) -> Any:
    crm = Receiver().start()
    phones = Receiver(secret="phones-secret-0123456789").start()
    request.cls.crm, request.cls.phones = crm, phones
    yield
    crm.stop()
    phones.stop()


@pytest.mark.usefixtures("receivers")
class WebhookTest(GatewayTestCase):
    crm: Receiver
    phones: Receiver

    def get_config(self) -> Any:
        self.config_text = CONFIG.format(crm=self.crm.url, phones=self.phones.url)
        return super().get_config()

    def wait_for(self, condition: Callable[[], bool], timeout: float = 5.0) -> None:
        async def poll() -> None:
            deadline = time.monotonic() + timeout
            while not condition():
                assert time.monotonic() < deadline, "timed out waiting"
                await asyncio.sleep(0.02)

        self.io_loop.run_sync(poll, timeout=timeout + 1)

    def phone(self, user: str) -> tuple[str, dict[str, str]]:
        token = self.login(user)["token"]
        device = self.get_phone_number(user)
        return token, {"encryptedData": device["encryptedData"], "iv": device["iv"]}

    def test_login_and_phone_events_are_delivered_signed(self) -> None:
        login = self.login("amy")
        self.wait_for(lambda: len(self.crm.delivered()) == 1)
        event = self.crm.delivered()[0]
        assert event["type"] == "user.login"
        assert (event["app"], event["appid"], event["openid"]) == ("demo", "wx0000000000demo0", login["openid"])
        assert event["unionid"] == login["unionid"]
        assert event["first_login"] is True
        call = self.crm.received[0]
        assert call["headers"]["X-Wxgate-Event-Id"] == event["id"]
        assert call["headers"]["X-Wxgate-Event-Type"] == "user.login"
        assert abs(int(call["headers"]["X-Wxgate-Timestamp"]) - time.time()) < 10
        assert self.crm.verify(call)
        tampered = {**call, "body": call["body"].replace(b"amy", b"eve") + b" "}
        assert not self.crm.verify(tampered)

        token = login["token"]
        device = self.get_phone_number("amy")
        status, _, _ = self.call(
            "/v1/demo/phone", {"encryptedData": device["encryptedData"], "iv": device["iv"]}, token=token
        )
        assert status == 200
        self.wait_for(lambda: len(self.crm.delivered()) == 2 and len(self.phones.delivered()) == 1)
        bound = self.phones.delivered()[0]
        assert bound["type"] == "phone.bound"
        masked = phone_for("amy")[:3] + "****" + phone_for("amy")[-4:]
        assert bound["phone"] == {"masked": masked, "countryCode": "86"}
        assert phone_for("amy") not in json.dumps(self.crm.delivered() + self.phones.delivered())
        # the filter: the phones endpoint never got user.login
        assert [e["type"] for e in self.phones.delivered()] == ["phone.bound"]
        assert self.gateway.deliverer is not None
        assert self.gateway.deliverer.counts["delivered"] == 3

    def test_response_does_not_wait_for_the_receiver(self) -> None:
        self.crm.delay = 1.5
        started = time.monotonic()
        self.login("ben")
        assert time.monotonic() - started < 1.0
        self.wait_for(lambda: len(self.crm.delivered()) == 1, timeout=5)

    def test_5xx_and_429_are_retried_with_the_same_event_id(self) -> None:
        self.crm.script = [503, 429, 500]
        self.login("cat")
        self.wait_for(lambda: len(self.crm.delivered()) == 1)
        ids = {call["headers"]["X-Wxgate-Event-Id"] for call in self.crm.received}
        assert [call["status"] for call in self.crm.received] == [503, 429, 500, 200]
        assert len(ids) == 1
        storage: Any = self.gateway.storage
        (record,) = [e for e in storage.events.values() if e.endpoint == "crm"]
        assert (record.status, record.attempts) == ("delivered", 3)

    def test_4xx_is_dead_lettered_at_once_and_can_be_retried(self) -> None:
        self.crm.script = [400]
        self.login("dan")
        storage: Any = self.gateway.storage
        self.wait_for(lambda: any(e.status == "dead" for e in storage.events.values()))
        (dead,) = [e for e in storage.events.values() if e.status == "dead"]
        assert dead.last_error == "HTTP 400: the receiver refused it"
        assert len(self.crm.received) == 1
        assert self.io_loop.run_sync(lambda: storage.requeue_events(None, time.time())) == 1
        self.gateway.deliverer.wake()
        self.wait_for(lambda: len(self.crm.delivered()) == 1)

    def test_max_attempts_then_dead_never_dropped(self) -> None:
        self.crm.script = [500] * 10
        self.login("eli")
        storage: Any = self.gateway.storage
        self.wait_for(lambda: any(e.status == "dead" for e in storage.events.values()))
        (dead,) = [e for e in storage.events.values() if e.status == "dead"]
        assert dead.attempts == 4
        assert dead.last_error == "HTTP 500 after 4 attempts"
        assert len(self.crm.received) == 4

    def test_receiver_down_then_back(self) -> None:
        self.crm.stop()
        self.login("fay")
        storage: Any = self.gateway.storage
        self.wait_for(lambda: any(e.attempts >= 2 for e in storage.events.values()))
        pending = [e for e in storage.events.values() if e.endpoint == "crm"]
        assert pending[0].status in ("pending", "delivering")
        assert "Error" in (pending[0].last_error or "")
        self.crm.start()  # same port
        self.wait_for(lambda: len(self.crm.delivered()) == 1)

    def test_a_retried_request_makes_no_second_event(self) -> None:
        token, fields = self.phone("gus")
        for _ in range(2):
            assert self.call("/v1/demo/phone", fields, token=token)[0] == 200
        self.wait_for(lambda: len(self.phones.delivered()) >= 1)
        self.io_loop.run_sync(lambda: asyncio.sleep(0.3))
        assert len(self.phones.delivered()) == 1


@pytest.fixture
def default_receiver(request: pytest.FixtureRequest) -> Any:
    receiver = Receiver(secret="newcomer-secret-0123").start()
    request.cls.receiver = receiver
    yield
    receiver.stop()


@pytest.mark.usefixtures("default_receiver")
class DefaultConfigWebhookTest(GatewayTestCase):
    """The embedded default notifies $WXGATE_WEBHOOK_URL when it is set: no YAML to edit."""

    receiver: Receiver

    def get_config(self) -> Any:
        self.env = {"WXGATE_WEBHOOK_URL": self.receiver.url, "WXGATE_WEBHOOK_SECRET": "newcomer-secret-0123"}
        return super().get_config()

    def test_events_arrive_with_only_two_variables_set(self) -> None:
        token = self.login("neo")["token"]
        device = self.get_phone_number("neo")
        assert (
            self.call("/v1/demo/phone", {"encryptedData": device["encryptedData"], "iv": device["iv"]}, token=token)[0]
            == 200
        )

        async def wait() -> None:
            deadline = time.monotonic() + 5
            while len(self.receiver.delivered()) < 2:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)

        self.io_loop.run_sync(wait, timeout=10)
        assert sorted(e["type"] for e in self.receiver.delivered()) == ["phone.bound", "user.login"]


def test_default_config_refuses_a_url_without_a_secret() -> None:
    from gateway.config import load_config
    from gateway.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        load_config(env={"WXGATE_WEBHOOK_URL": "http://127.0.0.1:9/hook"})
    assert "webhooks.endpoints[0]" in str(caught.value)
    assert "secret must be at least 16 characters" in str(caught.value)
