"""The sandbox's simulated users (and issued tokens) are kept in the gateway's storage: they
survive a restart of the gateway, or of `wxgate sandbox`, as they would with WeChat, and
past ``sandbox.max_users`` the oldest is dropped first."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tornado.testing import AsyncHTTPTestCase
from tornado.web import Application

from gateway.errors import StorageUnavailable
from gateway.sandbox import SandboxApp, SandboxWorld, make_sandbox_app
from gateway.sandbox.world import openid_for, phone_for
from tests.helpers import ROOT, WXGATE, post, start_on_a_free_port
from tests.test_storage_contract import STORAGE_KEY, open_storage

APPID = "wx00000000000shop"
SECRET = "shop-secret-1234"


def config_text(mongo_uri: str, upstream: str, database: str, max_users: int = 10_000) -> str:
    return f"""
server: {{log_format: json}}
storage:
  plugin: mongo
  options: {{uri: "{mongo_uri}", database: "{database}", encryption_key: "{STORAGE_KEY}"}}
sandbox: {{max_users: {max_users}}}
pipelines:
  login: [code2session, persist_user, issue_session]
  phone_code: [check_session, phone_code, watermark, mask_guard, persist_phone, respond]
apps:
  shop: {{appid: {APPID}, secret: {SECRET}, upstream: {upstream}}}
"""


class Process:
    """One `wxgate` command, ``command(port)``, which can be stopped and started again: on the
    same port, or on another when that one was taken meanwhile."""

    def __init__(self, command: Callable[[int], list[str]], probe: str) -> None:
        self.command, self.probe = command, probe
        self.port: int | None = None
        self.url = ""
        self.proc: subprocess.Popen[str] | None = None
        self.outputs: list[str] = []

    def start(self) -> None:
        self.proc, self.port, self.url = start_on_a_free_port(
            lambda port: subprocess.Popen(
                self.command(port),
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            ),
            self.probe,
            port=self.port,
        )

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=30)
        self.outputs.append(out)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in started:
        process.stop()


def gateway_process(tmp_path: Path, mongo_uri: str, processes: list[Process]) -> Process:
    config = tmp_path / "gateway.yaml"
    config.write_text(config_text(mongo_uri, "sandbox", "sbx" + uuid.uuid4().hex[:10]))
    process = Process(lambda port: [WXGATE, "serve", "--config", str(config), "--port", str(port)], "/healthz")
    processes.append(process)
    process.start()
    return process


def test_a_user_of_the_mounted_sandbox_survives_a_gateway_restart(
    tmp_path: Path, mongo_uri: str, processes: list[Process]
) -> None:
    gateway = gateway_process(tmp_path, mongo_uri, processes)
    status, device = post(gateway.url + "/_sandbox/shop/wx.login", {"user": "rita"})
    assert status == 200, device
    status, login = post(gateway.url + "/v1/shop/login", {"code": device["code"]})
    assert status == 200, login
    assert login["openid"] == openid_for(APPID, "rita")

    gateway.restart()

    # WeChat still knows her: no wx.login needed for her phone, and her session key is the same
    status, phone = post(gateway.url + "/_sandbox/shop/getPhoneNumber", {"user": "rita"})
    assert status == 200, phone
    status, body = post(gateway.url + "/v1/shop/phone", {"code": phone["code"]}, login["token"])
    assert status == 200, body
    assert body["purePhoneNumber"] == phone_for("rita")
    # and a new login gives the same openid, with the phone-code flow still working
    status, device = post(gateway.url + "/_sandbox/shop/wx.login", {"user": "rita"})
    assert status == 200, device
    status, again = post(gateway.url + "/v1/shop/login", {"code": device["code"]})
    assert status == 200, again
    assert again["openid"] == login["openid"]
    status, phone = post(gateway.url + "/_sandbox/shop/getPhoneNumber", {"user": "rita"})
    assert status == 200, phone
    status, body = post(gateway.url + "/v1/shop/phone", {"code": phone["code"]}, again["token"])
    assert status == 200, body
    assert body["purePhoneNumber"] == phone_for("rita")
    # someone never logged in is still unknown
    status, body = post(gateway.url + "/_sandbox/shop/getPhoneNumber", {"user": "nobody"})
    assert (status, body["error"]["code"]) == (409, "not_logged_in")


def stable_token(sandbox: str) -> str:
    status, body = post(
        sandbox + "/cgi-bin/stable_token", {"grant_type": "client_credential", "appid": APPID, "secret": SECRET}
    )
    assert status == 200, body
    return str(body["access_token"])


def code2session(sandbox: str, code: str) -> dict[str, Any]:
    query = urllib.parse.urlencode(
        {"appid": APPID, "secret": SECRET, "js_code": code, "grant_type": "authorization_code"}
    )
    with urllib.request.urlopen(f"{sandbox}/sns/jscode2session?{query}", timeout=10) as response:
        body: dict[str, Any] = json.loads(response.read())
        return body


def test_the_standalone_sandbox_keeps_users_and_tokens_across_its_restart(
    tmp_path: Path, mongo_uri: str, processes: list[Process]
) -> None:
    config = tmp_path / "sandbox.yaml"
    database = "sbx" + uuid.uuid4().hex[:10]  # the same at the restart

    def command(port: int) -> list[str]:
        config.write_text(config_text(mongo_uri, f"http://127.0.0.1:{port}", database))
        return [WXGATE, "sandbox", "--config", str(config), "--port", str(port)]

    sandbox = Process(command, "/_sandbox/_stats")
    processes.append(sandbox)
    sandbox.start()
    status, device = post(sandbox.url + "/_sandbox/shop/wx.login", {"user": "sam"})
    assert status == 200, device
    before = code2session(sandbox.url, device["code"])
    assert before["openid"] == openid_for(APPID, "sam")
    token = stable_token(sandbox.url)

    sandbox.restart()

    status, phone = post(sandbox.url + "/_sandbox/shop/getPhoneNumber", {"user": "sam"})
    assert status == 200, phone  # known without a new wx.login
    # the access token issued before the restart is still valid, and still the current one
    assert stable_token(sandbox.url) == token
    status, body = post(f"{sandbox.url}/wxa/business/getuserphonenumber?access_token={token}", {"code": phone["code"]})
    assert status == 200, body
    assert body["errcode"] == 0, body
    assert body["phone_info"]["purePhoneNumber"] == phone_for("sam")
    status, device = post(sandbox.url + "/_sandbox/shop/wx.login", {"user": "sam"})
    assert status == 200, device
    after = code2session(sandbox.url, device["code"])
    assert (after["openid"], after["unionid"]) == (before["openid"], before["unionid"])
    assert after["session_key"] != before["session_key"]  # a new wx.login, a new key


@pytest.mark.parametrize("backend", ["memory", "mongo-pymongo"])
def test_max_users_drops_the_oldest_first_across_a_restart(backend: str, request: pytest.FixtureRequest) -> None:
    uri = request.getfixturevalue("mongo_uri") if backend != "memory" else ""
    app = SandboxApp("shop", APPID, SECRET)

    async def main() -> None:
        async with open_storage(backend, uri) as storage:
            world = SandboxWorld(apps=[app], max_users=3, storage=storage)
            for name in "abcd":
                await world.wx_login(app, name)
            await world.wx_login(app, "b")  # a known user again is not a new one
            assert [name for _, name in world.users] == ["b", "c", "d"]
            restarted = SandboxWorld(apps=[app], max_users=3, storage=storage)  # an empty cache
            assert await restarted.user(app, "a") is None
            kept = {name: await restarted.user(app, name) for name in "bcd"}
            assert {name: sim.logins for name, sim in kept.items() if sim is not None} == {"b": 2, "c": 1, "d": 1}
            b = kept["b"]
            assert b is not None
            assert b.session_key == world.users[(APPID, "b")].session_key
            await restarted.wx_login(app, "e")
            assert await SandboxWorld(apps=[app], max_users=3, storage=storage).user(app, "b") is None

    asyncio.run(main())


def test_a_tampered_sandbox_user_is_absent(mongo_uri: str) -> None:
    app = SandboxApp("shop", APPID, SECRET)

    async def main() -> None:
        async with open_storage("mongo-pymongo", mongo_uri) as storage:
            await SandboxWorld(apps=[app], storage=storage).wx_login(app, "tom")
            mongo: Any = storage
            db = mongo.db
            record_id = f"{APPID}:{openid_for(APPID, 'tom')}"
            await db.sandbox_users.update_one({"_id": record_id}, {"$set": {"phone": "13900000000"}})
            assert await storage.get_sandbox_user(APPID, openid_for(APPID, "tom")) is None

    asyncio.run(main())


def test_a_storage_outage_leaves_known_users_served() -> None:
    """WeChat does not notice the gateway's storage failing: a cached user still logs in."""
    app = SandboxApp("shop", APPID, SECRET)

    class Down:
        async def put_sandbox_user(self, *args: Any) -> None:
            raise StorageUnavailable(log_detail="test outage")

        async def get_sandbox_user(self, *args: Any) -> None:
            raise StorageUnavailable(log_detail="test outage")

    async def main() -> None:
        async with open_storage("memory", "") as storage:
            world = SandboxWorld(apps=[app], storage=storage)
            await world.wx_login(app, "uma")
            down: Any = Down()
            world.storage = down
            assert await world.wx_login(app, "uma")  # cached: served, the write is only logged
            assert world.users[(APPID, "uma")].logins == 2
            with pytest.raises(StorageUnavailable):
                await world.wx_login(app, "vic")  # unknown here, and the storage cannot say

    asyncio.run(main())


class _Down:
    """A storage that is down for the sandbox's methods."""

    async def get_sandbox_user(self, *args: Any) -> None:
        raise StorageUnavailable(log_detail="test outage")

    async def get_sandbox_tokens(self, *args: Any) -> None:
        raise StorageUnavailable(log_detail="test outage")


class SandboxOutageOverHttpTest(AsyncHTTPTestCase):
    def get_app(self) -> Application:
        down: Any = _Down()
        return make_sandbox_app(SandboxWorld(apps=[SandboxApp("shop", APPID, SECRET)], storage=down))

    def test_device_paths_answer_503_and_the_api_answers_wechats_system_error(self) -> None:
        response = self.fetch("/_sandbox/shop/wx.login", method="POST", body=json.dumps({"user": "ned"}))
        assert response.code == 503
        assert json.loads(response.body)["error"]["code"] == "storage_unavailable"
        assert response.headers["Retry-After"] == "5"
        body = {"grant_type": "client_credential", "appid": APPID, "secret": SECRET}
        response = self.fetch("/cgi-bin/stable_token", method="POST", body=json.dumps(body))
        assert response.code == 200
        assert json.loads(response.body) == {"errcode": -1, "errmsg": "system error"}
