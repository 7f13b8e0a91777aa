"""The newer phone-code flow and what persist_user / persist_phone keep, end to end."""

from __future__ import annotations

from typing import Any

from gateway.sandbox.world import phone_for
from gateway.sealing import keyed_hash
from gateway.testing import GatewayTestCase

APPID = "wx0000000000demo0"


class PhoneCodeFlowTest(GatewayTestCase):
    def openid(self, user: str) -> str:
        world: Any = self.gateway.sandbox
        return str(world.users[(APPID, user)].openid)

    def test_phone_code_with_token(self) -> None:
        token = self.login("pat")["token"]
        code = self.get_phone_number("pat")["code"]
        status, body, _ = self.call("/v1/demo/phone", {"code": code}, token=token)
        assert status == 200, body
        assert body == {"phoneNumber": phone_for("pat"), "purePhoneNumber": phone_for("pat"), "countryCode": "86"}
        assert self.gateway.apps["demo"].wechat.calls == {
            "jscode2session": 1,
            "stable_token": 1,
            "getuserphonenumber": 1,
        }

    def test_phone_code_is_single_use(self) -> None:
        token = self.login("quentin")["token"]
        code = self.get_phone_number("quentin")["code"]
        assert self.call("/v1/demo/phone", {"code": code}, token=token)[0] == 200
        status, body, _ = self.call("/v1/demo/phone", {"code": code}, token=token)
        assert (status, body["error"]["code"]) == (400, "invalid_phone_code")

    def test_phone_code_of_another_user_is_refused(self) -> None:
        token = self.login("rob")["token"]
        self.login("sue")
        code = self.get_phone_number("sue")["code"]
        status, body, _ = self.call("/v1/demo/phone", {"code": code}, token=token)
        assert (status, body["error"]["code"]) == (400, "invalid_phone_code")

    def test_access_token_reused_then_refreshed_once_when_invalidated(self) -> None:
        token = self.login("tina")["token"]
        for _ in range(3):
            code = self.get_phone_number("tina")["code"]
            assert self.call("/v1/demo/phone", {"code": code}, token=token)[0] == 200
        wechat = self.gateway.apps["demo"].wechat
        assert wechat.calls["stable_token"] == 1
        world: Any = self.gateway.sandbox
        # someone else forced a refresh: ours is dead
        self.io_loop.run_sync(lambda: world.issue_token(APPID, force_refresh=True))
        code = self.get_phone_number("tina")["code"]
        status, body, _ = self.call("/v1/demo/phone", {"code": code}, token=token)
        assert status == 200, body
        assert wechat.calls["stable_token"] == 2
        assert wechat.calls["getuserphonenumber"] == 5  # 4 answered + 1 rejected and resent

    def test_token_rejected_twice_is_an_upstream_error_not_a_loop(self) -> None:
        token = self.login("uri")["token"]
        self.arm_fault("getuserphonenumber", errcode=40001, count=5)
        code = self.get_phone_number("uri")["code"]
        status, body, _ = self.call("/v1/demo/phone", {"code": code}, token=token)
        assert (status, body["error"]["code"]) == (502, "upstream_error")
        assert self.gateway.apps["demo"].wechat.calls["getuserphonenumber"] == 2

    def test_phone_code_needs_a_token(self) -> None:
        self.login("vera")
        code = self.get_phone_number("vera")["code"]
        # Without a token, 'code' is read as a wx.login code (the one-shot flow), and
        # WeChat does not take a phone code as a login code.
        status, body, _ = self.call("/v1/demo/phone", {"code": code})
        assert (status, body["error"]["code"]) == (400, "invalid_code")

    def test_persisted_user_and_phone(self) -> None:
        first = self.login("walt")
        self.login("walt")
        code = self.get_phone_number("walt")["code"]
        assert self.call("/v1/demo/phone", {"code": code}, token=first["token"])[0] == 200
        storage: Any = self.gateway.storage
        user = self.io_loop.run_sync(lambda: storage.get_user(APPID, first["openid"]))
        assert user.logins == 2
        assert user.unionid == first["unionid"]
        phones = self.io_loop.run_sync(lambda: storage.get_phones(APPID, first["openid"]))
        assert [(p.key, p.number, p.masked) for p in phones] == [
            ("+86" + phone_for("walt"), phone_for("walt"), phone_for("walt")[:3] + "****" + phone_for("walt")[-4:])
        ]


HASHED = """
storage: {plugin: memory}
pipelines:
  login: [code2session, persist_user, issue_session]
  phone:
    - check_session
    - decrypt: {kind: phone}
    - persist_phone: {store_phone: hashed, hash_key: "0123456789abcdef-hash"}
    - respond
  phone_code: [check_session, phone_code, {persist_phone: {store_phone: masked}}, respond]
apps:
  demo: {appid: wx0000000000demo0, secret: demo-secret-123, upstream: sandbox}
"""


class PhoneAtRestTest(GatewayTestCase):
    config_text = HASHED

    def test_hashed_and_masked_policies_keep_no_number(self) -> None:
        login = self.login("xia")
        device = self.get_phone_number("xia")
        status, body, _ = self.call(
            "/v1/demo/phone", {"encryptedData": device["encryptedData"], "iv": device["iv"]}, token=login["token"]
        )
        assert status == 200, body
        assert body["purePhoneNumber"] == phone_for("xia")  # the client still gets it
        storage: Any = self.gateway.storage
        phones = self.io_loop.run_sync(lambda: storage.get_phones(APPID, login["openid"]))
        assert len(phones) == 1
        assert phones[0].number is None
        assert phones[0].key == keyed_hash(b"0123456789abcdef-hash", "+86" + phone_for("xia"))
        assert phone_for("xia") not in repr(storage.phones)

        code = self.get_phone_number("xia")["code"]
        assert self.call("/v1/demo/phone", {"code": code}, token=login["token"])[0] == 200
        phones = self.io_loop.run_sync(lambda: storage.get_phones(APPID, login["openid"]))
        assert len(phones) == 2
        assert phones[1].key == "+86:" + phone_for("xia")[:3] + "****" + phone_for("xia")[-4:]
        assert phone_for("xia") not in repr(storage.phones)
