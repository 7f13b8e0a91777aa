"""Open data by cloudID: the phone_cloud and userinfo_cloud flows through the sandbox over real HTTP.

The sandbox's device simulator adds a cloudID to its getPhoneNumber / getUserProfile
answers when asked (``cloud: true``), and its fake WeChat answers getopendata for the
cloudIDs it issued, for their user and app only, for 5 minutes.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, ClassVar

import pytest
import tornado.web
from structlog.testing import capture_logs
from tornado.httpclient import AsyncHTTPClient
from tornado.testing import AsyncHTTPTestCase, gen_test

from gateway.errors import CloudDataFailed, UpstreamBusy
from gateway.hookspecs import hookimpl
from gateway.sandbox.world import SandboxApp, SandboxWorld, openid_for, phone_for
from gateway.testing import GatewayTestCase, make_app_config
from gateway.wechat.client import WeChatClient
from tests.webhook_receiver import Receiver

APPID = "wx0000000000demo0"


class _CloudMixin(GatewayTestCase):
    def cloud_phone(self, user: str, **extra: Any) -> str:
        return str(self.get_phone_number(user, cloud=True, **extra)["cloudID"])

    def cloud_profile(self, user: str, **extra: Any) -> str:
        return str(self.get_user_profile(user, cloud=True, **extra)["cloudID"])

    def calls(self, api: str) -> int:
        return self.gateway.apps["demo"].wechat.calls.get(api, 0)


class CloudFlowsTest(_CloudMixin):
    """The embedded default configuration: phone_cloud and userinfo_cloud as shipped."""

    def test_phone_by_cloud_id(self) -> None:
        login = self.login("cleo")
        cloud_id = self.cloud_phone("cleo")
        with capture_logs() as logs:
            status, body, _ = self.call("/v1/demo/phone", {"cloudID": cloud_id}, token=login["token"])
        assert status == 200, body
        assert body == {"phoneNumber": phone_for("cleo"), "purePhoneNumber": phone_for("cleo"), "countryCode": "86"}
        assert [e["flow"] for e in logs if e["event"] == "request" and e["path"] == "/v1/demo/phone"] == ["phone_cloud"]
        assert (self.calls("getopendata"), self.calls("stable_token")) == (1, 1)
        storage: Any = self.gateway.storage
        phones = self.io_loop.run_sync(lambda: storage.get_phones(APPID, login["openid"]))
        assert [p.number for p in phones] == [phone_for("cleo")]

    def test_userinfo_by_cloud_id(self) -> None:
        login = self.login("cyd")
        cloud_id = self.cloud_profile("cyd")
        status, body, _ = self.call("/v1/demo/userinfo", {"cloudID": cloud_id}, token=login["token"])
        assert status == 200, body
        assert body["openId"] == login["openid"] == openid_for(APPID, "cyd")
        assert body["nickName"] == "User cyd"
        assert "watermark" not in body
        assert self.calls("getopendata") == 1

    def test_the_fields_choose_the_flow(self) -> None:
        token = self.login("cato")["token"]
        device = self.get_phone_number("cato", cloud=True)
        assert {"encryptedData", "iv", "code", "cloudID"} <= set(device)
        # encryptedData wins over cloudID (phone), a code over cloudID (phone_code)
        with_data = {"encryptedData": device["encryptedData"], "iv": device["iv"], "cloudID": device["cloudID"]}
        assert self.call("/v1/demo/phone", with_data, token=token)[0] == 200
        assert (
            self.call("/v1/demo/phone", {"code": device["code"], "cloudID": device["cloudID"]}, token=token)[0] == 200
        )
        assert (self.calls("getuserphonenumber"), self.calls("getopendata")) == (1, 0)
        # without a token a cloudID is no way in
        status, body, _ = self.call("/v1/demo/phone", {"cloudID": device["cloudID"]})
        assert (status, body["error"]["code"]) == (401, "session_required")
        status, body, _ = self.call("/v1/demo/userinfo", {"cloudID": self.cloud_profile("cato")})
        assert (status, body["error"]["code"]) == (401, "session_required")
        assert self.calls("getopendata") == 0

    def test_another_users_cloud_id_is_refused(self) -> None:
        token = self.login("carl")["token"]
        self.login("cora")
        for path, cloud_id in (
            ("/v1/demo/phone", self.cloud_phone("cora")),
            ("/v1/demo/userinfo", self.cloud_profile("cora")),
        ):
            status, body, _ = self.call(path, {"cloudID": cloud_id}, token=token)
            # the session's openid goes with the call, and WeChat refuses another user's cloudID (40003)
            assert (status, body["error"]["code"], body["error"]["retryable"]) == (422, "cloud_data_failed", False)

    def test_busy_wechat_is_retryable_and_the_same_request_then_succeeds(self) -> None:
        token = self.login("cass")["token"]
        cloud_id = self.cloud_phone("cass")
        self.arm_fault("getopendata", errcode=-1)
        status, body, response = self.call("/v1/demo/phone", {"cloudID": cloud_id}, token=token)
        assert (status, body["error"]["code"], body["error"]["retryable"]) == (503, "upstream_busy", True)
        assert response.headers["Retry-After"] == str(UpstreamBusy.retry_after)
        status, body, _ = self.call("/v1/demo/phone", {"cloudID": cloud_id}, token=token)
        assert (status, body["purePhoneNumber"]) == (200, phone_for("cass"))

    def test_errcodes_are_cloud_data_failed_with_the_errcode_in_the_log(self) -> None:
        token = self.login("cyra")["token"]
        cloud_id = self.cloud_phone("cyra")
        for errcode in (40003, 40097, 61451):
            self.arm_fault("getopendata", errcode=errcode)
            with capture_logs() as logs:
                status, body, _ = self.call("/v1/demo/phone", {"cloudID": cloud_id}, token=token)
            assert (status, body["error"]["code"]) == (CloudDataFailed.status, "cloud_data_failed"), errcode
            assert str(errcode) not in json.dumps(body)
            (event,) = [e for e in logs if e["event"] == "request"]
            assert event["detail"].startswith(f"getopendata: errcode {errcode} "), event
        # an app-wide errcode keeps its meaning
        self.arm_fault("getopendata", errcode=45011)
        status, body, _ = self.call("/v1/demo/phone", {"cloudID": cloud_id}, token=token)
        assert (status, body["error"]["code"]) == (429, "upstream_rate_limited")

    def test_expired_cloud_id_is_cloud_data_failed(self) -> None:
        token = self.login("cole")["token"]
        cloud_id = self.cloud_phone("cole")
        world: Any = self.gateway.sandbox
        world.cloud_ids[cloud_id].expires_at = time.time() - 1  # issued 5 minutes and a second ago
        status, body, _ = self.call("/v1/demo/phone", {"cloudID": cloud_id}, token=token)
        assert (status, body["error"]["code"]) == (422, "cloud_data_failed")

    def test_cloud_id_of_an_old_base_library_is_not_given(self) -> None:
        self.login("cid")
        assert "cloudID" not in self.get_phone_number("cid", cloud=True, base_library="2.7.9")
        assert "cloudID" not in self.get_phone_number("cid")
        status, body, _ = self.call("/_sandbox/demo/getPhoneNumber", {"user": "cid", "cloud": "yes"})
        assert (status, body["error"]["code"]) == (400, "invalid_cloud")

    def test_malformed_and_missing_cloud_id(self) -> None:
        token = self.login("cy")["token"]
        status, body, _ = self.call("/v1/demo/phone", {"cloudID": "not a cloud id!"}, token=token)
        assert (status, body["error"]["code"]) == (400, "invalid_field")
        status, body, _ = self.call("/v1/demo/phone", {"cloudID": 7}, token=token)
        assert (status, body["error"]["code"]) == (400, "invalid_field")
        assert self.calls("getopendata") == 0

    def test_a_number_of_another_country_by_cloud_id(self) -> None:
        token = self.login("cal")["token"]
        cloud_id = self.cloud_phone("cal", base_library="2.8.0", phone="+12025550123")
        status, body, _ = self.call("/v1/demo/phone", {"cloudID": cloud_id}, token=token)
        assert (status, body) == (
            200,
            {"phoneNumber": "+12025550123", "purePhoneNumber": "2025550123", "countryCode": "1"},
        )

    def test_a_token_invalidated_at_wechat_is_refreshed_once(self) -> None:
        token = self.login("cliff")["token"]
        assert self.call("/v1/demo/phone", {"cloudID": self.cloud_phone("cliff")}, token=token)[0] == 200
        old = self.io_loop.run_sync(lambda: self.gateway.storage.get_access_token(APPID))
        assert old is not None
        status, body, _ = self.call("/_sandbox/_invalidate_token", {"app": "demo"})
        assert (status, body) == (200, {"invalidated": 1})
        # the old token is dead for every API of the fake WeChat
        query = f"?access_token={old.token}"
        answer = self.fetch("/_sandbox/upstream/wxa/getopendata" + query, method="POST", body="{}")
        assert json.loads(answer.body)["errcode"] == 40001
        status, body, _ = self.call("/v1/demo/phone", {"cloudID": self.cloud_phone("cliff")}, token=token)
        assert status == 200, body
        assert self.calls("stable_token") == 2
        assert self.calls("getopendata") == 3  # 1, then 1 refused with 40001 and resent once
        new = self.io_loop.run_sync(lambda: self.gateway.storage.get_access_token(APPID))
        assert new is not None
        assert new.token != old.token
        status, body, _ = self.call("/_sandbox/_invalidate_token", {"app": "nobody"})
        assert status == 400


class _PhoneBound:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []

    @hookimpl
    def wxgate_phone_bound(self, openid: str, masked_phone: str, country_code: str) -> None:
        self.calls.append((openid, masked_phone, country_code))


class CloudPhoneHookTest(_CloudMixin):
    hook_plugins = [_PhoneBound()]

    def test_a_phone_bound_by_cloud_id_is_told_to_the_hooks(self) -> None:
        listener = self.hook_plugins[0]
        assert isinstance(listener, _PhoneBound)
        login = self.login("hal")
        assert self.call("/v1/demo/phone", {"cloudID": self.cloud_phone("hal")}, token=login["token"])[0] == 200
        assert self.call("/v1/demo/userinfo", {"cloudID": self.cloud_profile("hal")}, token=login["token"])[0] == 200
        masked = phone_for("hal")[:3] + "****" + phone_for("hal")[-4:]
        assert listener.calls == [(login["openid"], masked, "86")]  # the phone flow only


FOREIGN = """
storage: {plugin: memory}
pipelines:
  login: [code2session, issue_session]
  phone_cloud: [check_session, {cloud_data: {kind: phone}}, respond]
  userinfo_cloud: [check_session, {cloud_data: {kind: userinfo, bind_openid: false}}, respond]
apps:
  demo: {appid: wx0000000000demo0, secret: demo-secret-123, upstream: sandbox}
"""


class CloudDataChecksTest(_CloudMixin):
    """What cloud_data refuses by itself, without watermark or WeChat's openid check."""

    config_text = FOREIGN

    def test_data_of_another_app_is_refused(self) -> None:
        token = self.login("fay")["token"]
        cloud_id = self.cloud_phone("fay", watermark={"appid": "wx-someone-else"})
        status, body, _ = self.call("/v1/demo/phone", {"cloudID": cloud_id}, token=token)
        assert (status, body["error"]["code"]) == (422, "watermark_appid_mismatch")

    def test_user_info_of_another_user_is_refused(self) -> None:
        token = self.login("flo")["token"]
        self.login("fitz")
        cloud_id = self.cloud_profile("fitz")
        status, body, _ = self.call("/v1/demo/userinfo", {"cloudID": cloud_id}, token=token)
        assert (status, body["error"]["code"]) == (422, "unexpected_payload")
        assert "another user" in body["error"]["message"]
        assert self.calls("getopendata") == 1  # WeChat answered; the step refused

    def test_phone_data_sent_as_user_info_is_refused(self) -> None:
        token = self.login("fern")["token"]
        status, body, _ = self.call("/v1/demo/userinfo", {"cloudID": self.cloud_phone("fern")}, token=token)
        assert (status, body["error"]["code"]) == (422, "unexpected_payload")


REPLAY = """
storage: {{plugin: memory}}
webhooks:
  endpoints: [{{name: crm, url: "{url}", secret: crm-secret-0123456789}}]
pipelines:
  login: [code2session, issue_session]
  phone_cloud:
    - check_session
    - cloud_data: {{kind: phone}}
    - watermark: {{max_age: 600}}
    - webhook: {{event: phone.bound}}
    - respond
apps:
  demo: {{appid: wx0000000000demo0, secret: demo-secret-123, upstream: sandbox}}
  strict:
    appid: wx000000000strict
    secret: strict-secret-123
    upstream: sandbox
    pipelines:
      phone_cloud:
        - check_session
        - cloud_data: {{kind: phone}}
        - watermark: {{max_age: 600, replay: reject}}
        - respond
"""


@pytest.mark.usefixtures("receiver")
class CloudReplayAndEventsTest(_CloudMixin):
    crm: Receiver

    def get_config(self) -> Any:
        self.config_text = REPLAY.format(url=self.crm.url)
        return super().get_config()

    def event_ids(self) -> set[str]:
        storage: Any = self.gateway.storage
        return {event.id.split(":")[0] for event in storage.events.values() if event.type == "phone.bound"}

    def test_a_cloud_id_sent_twice_is_one_event(self) -> None:
        token = self.login("ed")["token"]
        cloud_id = self.cloud_phone("ed")
        for _ in range(2):
            status, body, _ = self.call("/v1/demo/phone", {"cloudID": cloud_id}, token=token)
            assert (status, body["purePhoneNumber"]) == (200, phone_for("ed"))
        assert len(self.event_ids()) == 1
        # a new cloudID is a new binding: a second event
        assert self.call("/v1/demo/phone", {"cloudID": self.cloud_phone("ed")}, token=token)[0] == 200
        assert len(self.event_ids()) == 2

        async def delivered() -> None:
            deadline = time.monotonic() + 5
            while len(self.crm.delivered()) < 2:
                assert time.monotonic() < deadline, "not delivered"
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.3)  # time enough for a third, were there one

        self.io_loop.run_sync(delivered, timeout=10)
        delivered_ids = [event["id"] for event in self.crm.delivered()]
        assert sorted(delivered_ids) == sorted(self.event_ids())
        masked = phone_for("ed")[:3] + "****" + phone_for("ed")[-4:]
        assert [event["phone"] for event in self.crm.delivered()] == [{"masked": masked, "countryCode": "86"}] * 2

    def test_replay_of_a_cloud_id_is_refused_where_configured(self) -> None:
        token = self.login("eve", app="strict")["token"]
        cloud_id = self.cloud_phone("eve", app="strict")
        assert self.call("/v1/strict/phone", {"cloudID": cloud_id}, token=token)[0] == 200
        status, body, _ = self.call("/v1/strict/phone", {"cloudID": cloud_id}, token=token)
        assert (status, body["error"]["code"], body["error"]["retryable"]) == (422, "replayed", False)


class _FakeOpenData(tornado.web.RequestHandler):
    answer: ClassVar[dict[str, Any]] = {}

    def post(self) -> None:
        self.finish(self.answer)


class _FakeToken(tornado.web.RequestHandler):
    def post(self) -> None:
        self.finish({"access_token": "fake-access-token-0123", "expires_in": 7200})


class OpenDataAnswerShapesTest(AsyncHTTPTestCase):
    """WeChat documents ``json`` as a string and shows it as an object: both are read."""

    def get_app(self) -> tornado.web.Application:
        return tornado.web.Application([("/cgi-bin/stable_token", _FakeToken), ("/wxa/getopendata", _FakeOpenData)])

    def client(self) -> WeChatClient:
        from gateway.registry import Registry

        memory = Registry.discover().storages["memory"]
        return WeChatClient(make_app_config(), self.get_url(""), memory(memory.Options()), AsyncHTTPClient())

    @gen_test
    async def test_json_as_string_or_object(self) -> None:
        data = {"stepInfoList": [{"timestamp": 1603641600, "step": 1234}], "watermark": {"appid": "wx"}}
        for shape in (json.dumps({"cloudID": "27_x", "data": data}), {"cloudID": "27_x", "data": data}):
            _FakeOpenData.answer = {"errcode": 0, "data_list": [{"cloud_id": "27_x", "json": shape}]}
            assert await self.client().get_open_data("27_x") == data

    @gen_test
    async def test_an_answer_without_the_cloud_ids_entry_is_cloud_data_failed(self) -> None:
        for entries in ([], [{"cloud_id": "27_other", "json": "{}"}], None):
            _FakeOpenData.answer = {"errcode": 0, "data_list": entries}
            with pytest.raises(CloudDataFailed):
                await self.client().get_open_data("27_x")


def test_invalidated_tokens_stay_invalid_for_a_sandbox_on_the_same_storage() -> None:
    """The switch is kept in the storage, as issued tokens are: a sandbox restarted (or
    another process on the same storage) does not bring the old token back."""
    from gateway.registry import Registry

    memory = Registry.discover().storages["memory"]
    storage = memory(memory.Options())
    app = SandboxApp("demo", APPID, "demo-secret-123")

    async def scenario() -> None:
        first = SandboxWorld(apps=[app], storage=storage)
        token, _ = await first.issue_token(APPID, force_refresh=False)
        assert await first.token_app(token) == app
        assert await first.invalidate_tokens(APPID) == 1
        assert await first.token_app(token) is None
        again = SandboxWorld(apps=[app], storage=storage)
        assert await again.token_app(token) is None
        fresh, _ = await again.issue_token(APPID, force_refresh=False)  # normal mode: a new one
        assert fresh != token
        assert await again.token_app(fresh) == app

    asyncio.run(scenario())
