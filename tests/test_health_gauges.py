"""The gauges the alert rules read: wxgate_storage_up follows a real MongoDB stopped and
restarted under the gateway, wxgate_upstream_circuit_open follows an app's breaker."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest

from gateway.testing import GatewayTestCase
from tests.helpers import free_port, start_embedded_mongo
from tests.test_storage_contract import STORAGE_KEY
from tests.test_storage_outage import CONFIG
from wxgate_plugins.storages.embedded_mongo import EmbeddedMongo


def gauge(metrics: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", metrics, re.MULTILINE)
    assert match is not None, f"{name} not exported"
    return float(match.group(1))


@pytest.fixture
def mongo_server(tmp_path: Path, request: pytest.FixtureRequest) -> Any:
    mongo = start_embedded_mongo(str(tmp_path / "gauges.db"))
    request.cls.mongo = mongo
    yield mongo
    mongo.stop()


@pytest.mark.usefixtures("mongo_server")
class StorageUpTest(GatewayTestCase):
    storage_plugin = None
    mongo: EmbeddedMongo

    def get_config(self) -> Any:
        self.config_text = CONFIG.format(uri=self.mongo.uri, key=STORAGE_KEY)
        return super().get_config()

    def metrics(self) -> str:
        return self.fetch("/metrics").body.decode()

    def test_storage_up_follows_the_database(self) -> None:
        assert gauge(self.metrics(), "wxgate_storage_up") == 1.0  # the storage started
        self.mongo.stop()
        # the background outbox read (the only storage use of an idle process) sees it down
        assert self.io_loop.run_sync(self.gateway.outbox_gauges.refresh) is False
        assert gauge(self.metrics(), "wxgate_storage_up") == 0.0
        self.mongo.start()  # same port, same file

        async def until_read() -> None:
            for _ in range(150):  # the driver reconnects on its own; on a loaded machine that takes a while
                if await self.gateway.outbox_gauges.refresh():
                    return
                await asyncio.sleep(0.2)

        self.io_loop.run_sync(until_read, timeout=30)
        assert gauge(self.metrics(), "wxgate_storage_up") == 1.0
        # a readiness probe tells the same
        self.mongo.stop()
        assert self.fetch("/readyz").code == 503
        assert gauge(self.metrics(), "wxgate_storage_up") == 0.0


class CircuitGaugeTest(GatewayTestCase):
    def get_config(self) -> Any:
        self.config_text = f"""
storage: {{plugin: memory}}
pipelines:
  login: [code2session, issue_session]
apps:
  demo: {{appid: wx0000000000demo0, secret: demo-secret-123, upstream: sandbox, circuit_failures: 2,
         circuit_cooldown: 0.3}}
  down: {{appid: wx0000000000down0, secret: down-secret-123, upstream: "http://127.0.0.1:{free_port()}",
         circuit_failures: 2, circuit_cooldown: 0.3}}
"""
        return super().get_config()

    def circuit(self, app: str) -> float:
        return gauge(self.fetch("/metrics").body.decode(), f'wxgate_upstream_circuit_open{{app="{app}"}}')

    def test_the_gauge_follows_each_apps_circuit(self) -> None:
        assert (self.circuit("demo"), self.circuit("down")) == (0.0, 0.0)
        for _ in range(2):
            assert self.call("/v1/down/login", {"code": "abc"})[1]["error"]["code"] == "upstream_unreachable"
        assert (self.circuit("demo"), self.circuit("down")) == (0.0, 1.0)
        # WeChat busy twice: the demo app's circuit opens; after the cooldown a login succeeds and closes it
        self.arm_fault("jscode2session", errcode=-1, count=2)
        for _ in range(2):
            assert self.call("/v1/demo/login", {"code": self.wx_login("busy")})[1]["error"]["code"] == "upstream_busy"
        assert self.circuit("demo") == 1.0
        self.io_loop.run_sync(lambda: asyncio.sleep(0.4))
        assert self.circuit("demo") == 1.0  # half-open is still open: only a successful trial closes it
        assert self.call("/v1/demo/login", {"code": self.wx_login("busy")})[0] == 200
        assert (self.circuit("demo"), self.circuit("down")) == (0.0, 1.0)
