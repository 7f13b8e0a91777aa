"""Storage round trips per flow: PyMongo's command monitoring counts every command the
gateway's storage sends to a real MongoDB wire-protocol server (nx-27017) while one
request runs, and each flow fails above its ceiling, so a change cannot add a round trip
unnoticed.

The gateway runs in this process on the default configuration's pipelines (with a
webhook endpoint, so that the flows emit their events); the fake WeChat runs as its own
process (``wxgate sandbox``, on memory storage), so that its storage use is not part of
any flow. The webhook deliverer and the outbox gauges are stopped while counting: they
are not part of a flow either (their budget is tested in tests/test_idle_storage.py).
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pymongo import monitoring
from tornado.web import Application

from gateway.app import make_app
from gateway.config import DEFAULT_CONFIG, Config, parse_config
from gateway.hooks import Hooks
from gateway.runtime import Gateway
from gateway.testing import GatewayTestCase
from tests.helpers import WXGATE, post, start_on_a_free_port
from tests.test_storage_contract import STORAGE_KEY
from wxgate_plugins.storages.mongo import MongoStorage

# Ceilings: storage commands of the flow's steps, besides one outbox insert per event.
CEILINGS = {"login": 3, "phone": 2, "phone_code": 2, "phone_oneshot": 3, "session": 1, "logout": 2}


class CommandCounter(monitoring.CommandListener):
    """Every command sent to one database, as (command name, collection), and as sent."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.commands: list[tuple[str, str]] = []
        self.sent: list[dict[str, Any]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.database_name == self.database:
            target = event.command.get(event.command_name)
            self.commands.append((event.command_name, target if isinstance(target, str) else ""))
            self.sent.append(dict(event.command))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def gateway_config(sandbox_port: int, mongo_uri: str, database: str) -> str:
    text = Path(DEFAULT_CONFIG).read_text()
    text = text.replace("upstream: sandbox", f"upstream: http://127.0.0.1:{sandbox_port}")
    storage = (
        f'storage: {{plugin: mongo, options: {{uri: "{mongo_uri}", database: {database}, '
        f'encryption_key: "{STORAGE_KEY}"}}}}\n'
    )
    start, end = text.index("storage:\n"), text.index("# Webhooks:")
    return text[:start] + storage + "\n" + text[end:]


@pytest.mark.usefixtures("mongo_uri_for_class")
class RoundTripTest(GatewayTestCase):
    storage_plugin = None  # the mongo storage of the file
    app_name = "demo"
    env: ClassVar[dict[str, str]] = {  # type: ignore[misc]
        "WXGATE_WEBHOOK_URL": "http://127.0.0.1:9/never-delivered",
        "WXGATE_WEBHOOK_SECRET": "round-trips-secret-0123456789",
    }
    mongo_uri: ClassVar[str]
    sandbox_url: ClassVar[str]

    def get_config(self) -> Config:
        self.database = "rt" + uuid.uuid4().hex[:10]
        port = int(self.sandbox_url.rsplit(":", 1)[1])
        return parse_config(gateway_config(port, self.mongo_uri, self.database), "<round trips>", env=self.env)

    def get_app(self) -> Application:
        self.config = self.get_config()
        self.gateway = Gateway(self.config, f"http://127.0.0.1:{self.get_http_port()}", hooks=Hooks())
        assert isinstance(self.gateway.storage, MongoStorage)
        self.counter = CommandCounter(self.database)
        self.gateway.storage.event_listeners.append(self.counter)
        self.io_loop.run_sync(self.gateway.start)
        # not part of any flow: stopped, so that only the request's commands are counted
        self.io_loop.run_sync(self.gateway.outbox_gauges.stop)
        self.io_loop.run_sync(self.gateway.deliverer.stop)
        return make_app(self.gateway)

    # --- the mini program, against the sandbox process ----------------------------------

    def sandbox_call(self, what: str, user: str) -> dict[str, Any]:
        status, body = post(f"{self.sandbox_url}/_sandbox/demo/{what}", {"user": user})
        assert status == 200, body
        return body

    def login_token(self, user: str) -> str:
        status, body, _ = self.call("/v1/demo/login", {"code": self.sandbox_call("wx.login", user)["code"]})
        assert status == 200, body
        return str(body["token"])

    def counted(self, flow: str, method: str, path: str, events: int, **request: Any) -> dict[str, Any]:
        """Run one request, and check its commands against the flow's ceiling."""
        self.counter.commands.clear()
        status, body, _ = self.call(path, method=method, **request)
        assert status in (200, 204), body
        commands = list(self.counter.commands)
        inserts = commands.count(("insert", "outbox"))
        assert inserts == events, commands  # one outbox record per event (one endpoint)
        others = len(commands) - inserts
        assert others <= CEILINGS[flow], f"{flow}: {others} commands besides events: {Counter(commands)}"
        self.seen[flow] = others
        return body

    seen: ClassVar[dict[str, int]] = {}

    def test_every_flow_within_its_ceiling(self) -> None:
        body = self.counted(
            "login", "POST", "/v1/demo/login", 1, body={"code": self.sandbox_call("wx.login", "ann")["code"]}
        )
        token = str(body["token"])

        device = self.sandbox_call("getPhoneNumber", "ann")
        fields = {"encryptedData": device["encryptedData"], "iv": device["iv"]}
        self.counted("phone", "POST", "/v1/demo/phone", 1, body=fields, token=token)

        body = self.counted("session", "GET", "/v1/demo/session", 0, token=token)
        assert body["phone"]["masked"].count("*") >= 4  # the bound phone, masked, from the same read

        # phone_code: the access token comes from the process's cache, warmed by a first call
        warm = self.login_token("bob")
        code = self.sandbox_call("getPhoneNumber", "bob")["code"]
        assert self.call("/v1/demo/phone", {"code": code}, token=warm)[0] == 200
        code = self.sandbox_call("getPhoneNumber", "ann")["code"]
        self.counted("phone_code", "POST", "/v1/demo/phone", 1, body={"code": code}, token=token)

        code = self.sandbox_call("wx.login", "cat")["code"]
        device = self.sandbox_call("getPhoneNumber", "cat")
        query = {"code": code, "encryptedData": device["encryptedData"], "iv": device["iv"]}
        self.counted("phone_oneshot", "GET", "/v1/demo/phone", 1, query=query)

        self.counted("logout", "POST", "/v1/demo/logout", 0, body={}, token=token)
        status, _, _ = self.call("/v1/demo/session", method="GET", token=token)
        assert status == 401  # revoked at once: nothing cached a session
        # the measured floor: one read to authenticate and load the keys, one write to record
        assert self.seen == {
            "login": 3,
            "phone": 2,
            "session": 1,
            "phone_code": 2,
            "phone_oneshot": 3,
            "logout": 2,
        }, self.seen


@pytest.fixture(scope="class")
def mongo_uri_for_class(
    request: pytest.FixtureRequest, mongo_uri: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """The server's URI, and the fake WeChat in its own process, for the test class."""
    cls = request.cls
    cls.mongo_uri = mongo_uri
    workdir = tmp_path_factory.mktemp("round-trips")
    config, log = workdir / "sandbox.yaml", workdir / "sandbox.log"

    def start_sandbox(port: int) -> subprocess.Popen[str]:
        text = gateway_config(port, mongo_uri, "unused")
        start, end = text.index("storage: {"), text.index("# Webhooks:")
        config.write_text(text[:start] + "storage: {plugin: memory}\n" + text[end:])
        with log.open("w") as out:
            return subprocess.Popen(
                [WXGATE, "sandbox", "--config", str(config), "--port", str(port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
                env={**os.environ, **cls.env},
            )

    sandbox, _, cls.sandbox_url = start_on_a_free_port(
        start_sandbox, "/_sandbox/_stats", output=lambda _: log.read_text()
    )
    try:
        yield
    finally:
        sandbox.terminate()
        sandbox.wait(10)
