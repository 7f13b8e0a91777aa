"""The flows end to end over real HTTP, with the sandbox mounted as WeChat."""

from __future__ import annotations

import base64
import json
import time
from dataclasses import replace
from typing import Any
from urllib.parse import quote

import pytest

from gateway.errors import Unauthorized
from gateway.flows import choose_flow
from gateway.sandbox.world import phone_for
from gateway.testing import GatewayTestCase
from tests.helpers import free_port


class LoginFlowTest(GatewayTestCase):
    def test_login_returns_token_and_ids_but_no_session_key(self) -> None:
        code = self.wx_login("alice")
        status, body, response = self.call("/v1/demo/login", {"code": code})
        assert status == 200, body
        assert set(body) == {"token", "openid", "unionid", "expires_in"}
        assert body["expires_in"] == 7200
        assert len(body["token"]) >= 40
        sim = self.gateway.sandbox.users[("wx0000000000demo0", "alice")]  # type: ignore[union-attr]
        assert body["openid"] == sim.openid
        assert body["unionid"] == sim.unionid
        assert sim.session_key not in response.body.decode()
        assert response.headers["Content-Type"].startswith("application/json")

    def test_reused_code_is_409(self) -> None:
        code = self.wx_login("bob")
        assert self.call("/v1/demo/login", {"code": code})[0] == 200
        status, body, _ = self.call("/v1/demo/login", {"code": code})
        assert status == 409
        assert body["error"]["code"] == "code_used"
        assert body["error"]["hint"]

    def test_unknown_code_is_400_invalid_code(self) -> None:
        status, body, _ = self.call("/v1/demo/login", {"code": "0" * 32})
        assert (status, body["error"]["code"]) == (400, "invalid_code")

    def test_missing_and_malformed_code(self) -> None:
        status, body, _ = self.call("/v1/demo/login", {})
        assert (status, body["error"]["code"]) == (400, "missing_field")
        status, body, _ = self.call("/v1/demo/login", {"code": "has spaces & symbols"})
        assert (status, body["error"]["code"]) == (400, "invalid_field")
        status, body, _ = self.call("/v1/demo/login", {"code": 12345})
        assert (status, body["error"]["code"]) == (400, "invalid_field")

    def test_malformed_json_and_non_object(self) -> None:
        status, body, _ = self.call("/v1/demo/login", raw_body=b'{"code": ')
        assert (status, body["error"]["code"]) == (400, "invalid_json")
        status, body, _ = self.call("/v1/demo/login", raw_body=b'["code"]')
        assert (status, body["error"]["code"]) == (400, "invalid_json")

    def test_form_body_is_accepted(self) -> None:
        code = self.wx_login("carol")
        status, body, _ = self.call(
            "/v1/demo/login",
            raw_body=f"code={code}".encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert status == 200, body
        assert body["openid"].startswith("o")

    def test_unknown_app_and_path_and_method(self) -> None:
        status, body, _ = self.call("/v1/nope/login", {"code": "x"})
        assert (status, body["error"]["code"]) == (404, "unknown_app")
        status, body, _ = self.call("/v2/demo/login", {"code": "x"})
        assert (status, body["error"]["code"]) == (404, "not_found")
        status, body, _ = self.call("/v1/demo/login", method="GET")
        assert (status, body["error"]["code"]) == (405, "method_not_allowed")

    def test_request_id_is_echoed_or_made(self) -> None:
        _, _, response = self.call("/v1/demo/login", {}, headers={"X-Request-Id": "abc-123"})
        assert response.headers["X-Request-Id"] == "abc-123"
        _, _, response = self.call("/v1/demo/login", {}, headers={"X-Request-Id": "bad id; with spaces"})
        assert response.headers["X-Request-Id"] != "bad id; with spaces"
        assert len(response.headers["X-Request-Id"]) == 32

    def test_body_too_large_is_413(self) -> None:
        status, body, _ = self.call("/v1/demo/login", {"code": "a" * 70_000})
        assert (status, body["error"]["code"]) == (413, "body_too_large")


class PhoneFlowTest(GatewayTestCase):
    def test_phone_with_token(self) -> None:
        token = self.login("alice")["token"]
        device = self.get_phone_number("alice")
        status, body, _ = self.call(
            "/v1/demo/phone", {"encryptedData": device["encryptedData"], "iv": device["iv"]}, token=token
        )
        assert status == 200, body
        assert body == {"phoneNumber": phone_for("alice"), "purePhoneNumber": phone_for("alice"), "countryCode": "86"}

    def test_one_shot_get_with_url_encoded_data(self) -> None:
        code = self.wx_login("dave")
        device = self.get_phone_number("dave")
        data, iv = quote(device["encryptedData"], safe=""), quote(device["iv"], safe="")
        url = f"/v1/demo/phone?code={code}&encryptedData={data}&iv={iv}"
        status, body, _ = self.call(url, method="GET")
        assert status == 200, body
        assert body["purePhoneNumber"] == phone_for("dave")

    def test_one_shot_post_json(self) -> None:
        code = self.wx_login("erin")
        device = self.get_phone_number("erin")
        status, body, _ = self.call(
            "/v1/demo/phone", {"code": code, "encryptedData": device["encryptedData"], "iv": device["iv"]}
        )
        assert status == 200, body
        assert body["phoneNumber"] == phone_for("erin")

    def test_plus_turned_space_is_repaired(self) -> None:
        code = self.wx_login("frank")
        device = self.get_phone_number("frank")
        # Retry until the base64 has a '+' to damage (random iv and key).
        for _ in range(50):
            if "+" in device["encryptedData"] + device["iv"]:
                break
            code = self.wx_login("frank")
            device = self.get_phone_number("frank")
        assert "+" in device["encryptedData"] + device["iv"]
        # Unencoded in a query string: '+' arrives as ' ', and a newline wraps the data.
        data = device["encryptedData"][:40] + "\n" + device["encryptedData"][40:]
        url = f"/v1/demo/phone?code={code}&encryptedData={quote(data, safe='+')}&iv={device['iv']}"
        status, body, _ = self.call(url, method="GET")
        assert status == 200, body
        assert body["purePhoneNumber"] == phone_for("frank")

    def test_rotated_session_key_is_recovered_with_token(self) -> None:
        token = self.login("gina")["token"]
        device = self.get_phone_number("gina")  # encrypted with key K1
        self.login("gina")  # wx.login + gateway login again: WeChat now holds K2
        status, body, _ = self.call(
            "/v1/demo/phone", {"encryptedData": device["encryptedData"], "iv": device["iv"]}, token=token
        )
        assert status == 200, body
        assert body["purePhoneNumber"] == phone_for("gina")

    def test_rotated_session_key_is_recovered_one_shot(self) -> None:
        self.login("hank")
        device = self.get_phone_number("hank")  # K1
        code = self.wx_login("hank")  # wx.login in the getPhoneNumber callback: K2
        status, body, _ = self.call(
            "/v1/demo/phone", {"code": code, "encryptedData": device["encryptedData"], "iv": device["iv"]}
        )
        assert status == 200, body
        assert body["purePhoneNumber"] == phone_for("hank")

    def test_key_two_rotations_old_is_not_recovered(self) -> None:
        token = self.login("ivan")["token"]
        device = self.get_phone_number("ivan")  # K1
        self.login("ivan")  # K2, previous K1
        self.login("ivan")  # K3, previous K2
        status, body, _ = self.call(
            "/v1/demo/phone", {"encryptedData": device["encryptedData"], "iv": device["iv"]}, token=token
        )
        assert (status, body["error"]["code"]) == (400, "decrypt_failed")
        assert "wx.login" in body["error"]["hint"]

    def test_masked_number_from_old_base_library_is_422(self) -> None:
        token = self.login("judy")["token"]
        device = self.get_phone_number("judy", base_library="1.8.6")
        status, body, _ = self.call(
            "/v1/demo/phone", {"encryptedData": device["encryptedData"], "iv": device["iv"]}, token=token
        )
        assert (status, body["error"]["code"]) == (422, "phone_masked")
        assert "1.9.1" in body["error"]["hint"]
        new = self.get_phone_number("judy", base_library="1.9.1")
        status, body, _ = self.call(
            "/v1/demo/phone", {"encryptedData": new["encryptedData"], "iv": new["iv"]}, token=token
        )
        assert status == 200

    def test_stale_watermark_is_422(self) -> None:
        token = self.login("kate")["token"]
        device = self.get_phone_number("kate", watermark={"timestamp": int(time.time()) - 3600})
        status, body, _ = self.call(
            "/v1/demo/phone", {"encryptedData": device["encryptedData"], "iv": device["iv"]}, token=token
        )
        assert (status, body["error"]["code"]) == (422, "watermark_expired")

    def test_watermark_of_another_appid_is_422(self) -> None:
        token = self.login("liam")["token"]
        device = self.get_phone_number("liam", watermark={"appid": "wx00000000other00"})
        status, body, _ = self.call(
            "/v1/demo/phone", {"encryptedData": device["encryptedData"], "iv": device["iv"]}, token=token
        )
        assert (status, body["error"]["code"]) == (422, "watermark_appid_mismatch")

    def test_no_token_no_code_is_401(self) -> None:
        status, body, _ = self.call("/v1/demo/phone", {"encryptedData": "AAAA", "iv": "AAAA"})
        assert (status, body["error"]["code"]) == (401, "session_required")
        status, body, _ = self.call("/v1/demo/phone", {}, headers={"Authorization": "Basic abc"})
        assert (status, body["error"]["code"]) == (401, "session_required")

    def test_unknown_token_is_401(self) -> None:
        status, body, _ = self.call("/v1/demo/phone", {"encryptedData": "AAAA", "iv": "AAAA"}, token="nope")
        assert (status, body["error"]["code"]) == (401, "session_invalid")

    def test_expired_token_is_401(self) -> None:
        token = self.login("mia")["token"]
        storage: Any = self.gateway.storage
        for key, session in list(storage.sessions.items()):
            storage.sessions[key] = replace(session, expires_at=time.time() - 1)
        device = self.get_phone_number("mia")
        status, body, _ = self.call(
            "/v1/demo/phone", {"encryptedData": device["encryptedData"], "iv": device["iv"]}, token=token
        )
        assert (status, body["error"]["code"]) == (401, "session_expired")

    def test_malformed_base64_and_lengths(self) -> None:
        token = self.login("nina")["token"]
        device = self.get_phone_number("nina")
        cases = [
            {"encryptedData": "!!!not base64!!!", "iv": device["iv"]},
            {"encryptedData": device["encryptedData"], "iv": "AAAA"},
            {"encryptedData": device["encryptedData"][:-8] + "AAA=", "iv": device["iv"]},
            {"encryptedData": "QUJD", "iv": device["iv"]},
        ]
        for fields in cases:
            status, body, _ = self.call("/v1/demo/phone", fields, token=token)
            assert (status, body["error"]["code"]) == (400, "invalid_encrypted_data"), fields
        status, body, _ = self.call("/v1/demo/phone", {"iv": device["iv"]}, token=token)
        assert (status, body["error"]["code"]) == (400, "missing_field")

    def test_every_decryption_failure_looks_the_same(self) -> None:
        token = self.login("owen")["token"]
        device = self.get_phone_number("owen")
        raw = bytearray(base64.b64decode(device["encryptedData"]))
        answers = set()
        for flip in (len(raw) - 1, len(raw) - 17, 0):
            damaged = bytearray(raw)
            damaged[flip] ^= 0x55
            status, body, _ = self.call(
                "/v1/demo/phone",
                {"encryptedData": base64.b64encode(bytes(damaged)).decode(), "iv": device["iv"]},
                token=token,
            )
            answers.add((status, json.dumps(body, sort_keys=True)))
        # And data encrypted for another user (another key) answers the same.
        self.login("owen2")
        foreign = self.get_phone_number("owen2")
        status, body, _ = self.call(
            "/v1/demo/phone", {"encryptedData": foreign["encryptedData"], "iv": foreign["iv"]}, token=token
        )
        answers.add((status, json.dumps(body, sort_keys=True)))
        assert len(answers) == 1
        status, text = next(iter(answers))
        assert status == 400
        assert json.loads(text)["error"]["code"] == "decrypt_failed"


class UserInfoFlowTest(GatewayTestCase):
    def test_userinfo_with_signature(self) -> None:
        token = self.login("pia")["token"]
        profile = self.get_user_profile("pia")
        fields = {k: profile[k] for k in ("encryptedData", "iv", "rawData", "signature")}
        status, body, _ = self.call("/v1/demo/userinfo", fields, token=token)
        assert status == 200, body
        assert body["nickName"] == "User pia"
        assert "watermark" not in body
        sim = self.gateway.sandbox.users[("wx0000000000demo0", "pia")]  # type: ignore[union-attr]
        assert body["openId"] == sim.openid

    def test_userinfo_without_signature_is_accepted(self) -> None:
        token = self.login("quin")["token"]
        profile = self.get_user_profile("quin")
        status, body, _ = self.call(
            "/v1/demo/userinfo", {"encryptedData": profile["encryptedData"], "iv": profile["iv"]}, token=token
        )
        assert status == 200, body

    def test_bad_signature_is_400(self) -> None:
        token = self.login("rita")["token"]
        profile = self.get_user_profile("rita")
        fields = {k: profile[k] for k in ("encryptedData", "iv", "rawData")}
        fields["signature"] = "0" * 40
        status, body, _ = self.call("/v1/demo/userinfo", fields, token=token)
        assert (status, body["error"]["code"]) == (400, "signature_mismatch")

    def test_phone_data_sent_to_userinfo_is_422(self) -> None:
        token = self.login("sam")["token"]
        device = self.get_phone_number("sam")
        status, body, _ = self.call(
            "/v1/demo/userinfo", {"encryptedData": device["encryptedData"], "iv": device["iv"]}, token=token
        )
        assert (status, body["error"]["code"]) == (422, "unexpected_payload")


_TWO_APPS = """
pipelines:
  login: [code2session, issue_session]
  phone:
    - check_session: {remote: true}
    - decrypt: {kind: phone}
    - watermark
    - mask_guard
    - respond
apps:
  demo:
    appid: wx0000000000demo0
    secret: demo-secret
    upstream: sandbox
    timeout: 2
  other:
    appid: wx000000000other0
    secret: other-secret
    upstream: sandbox
  down:
    appid: wx0000000000down0
    secret: down-secret
    upstream: http://127.0.0.1:{closed_port}
"""


class UpstreamTroubleTest(GatewayTestCase):
    def get_config(self) -> Any:
        self.config_text = _TWO_APPS.replace("{closed_port}", str(free_port()))
        return super().get_config()

    def test_upstream_down_is_502(self) -> None:
        status, body, _ = self.call("/v1/down/login", {"code": "abc"})
        assert (status, body["error"]["code"]) == (502, "upstream_unreachable")

    def test_upstream_timeout_is_504(self) -> None:
        code = self.wx_login("tom")
        # The app's timeout is 2 s, the fault 10 s: a gateway that waited for WeChat answers after
        # 10 s. (Wide margins: a loaded CI machine may take a while for the 2 s themselves.)
        self.arm_fault("jscode2session", delay=10)
        started = time.monotonic()
        status, body, _ = self.call("/v1/demo/login", {"code": code})
        assert (status, body["error"]["code"]) == (504, "upstream_timeout")
        assert time.monotonic() - started < 8

    def test_system_busy_is_503_with_retry_after(self) -> None:
        code = self.wx_login("uma")
        self.arm_fault("jscode2session", errcode=-1)
        status, body, response = self.call("/v1/demo/login", {"code": code})
        assert (status, body["error"]["code"]) == (503, "upstream_busy")
        assert int(response.headers["Retry-After"]) > 0
        # -1 did not consume the code: the client may retry with it.
        assert self.call("/v1/demo/login", {"code": code})[0] == 200

    def test_errcodes_map_to_stable_codes(self) -> None:
        for errcode, expected in [
            (45011, (429, "upstream_rate_limited")),
            (40226, (403, "user_blocked")),
            (99999, (502, "upstream_error")),
        ]:
            self.arm_fault("jscode2session", errcode=errcode)
            status, body, _ = self.call("/v1/demo/login", {"code": "abc"})
            assert (status, body["error"]["code"]) == expected, errcode

    def test_bad_upstream_answer_is_502(self) -> None:
        self.arm_fault("jscode2session", status=500)
        status, body, _ = self.call("/v1/demo/login", {"code": "abc"})
        assert (status, body["error"]["code"]) == (502, "upstream_error")

    def test_code_from_another_app_is_invalid(self) -> None:
        code = self.wx_login("vic", app="other")
        status, body, _ = self.call("/v1/demo/login", {"code": code})
        assert (status, body["error"]["code"]) == (400, "invalid_code")

    def test_token_of_another_app_is_refused(self) -> None:
        token = self.login("walt", app="other")["token"]
        status, body, _ = self.call("/v1/demo/phone", {"encryptedData": "AAAA", "iv": "AAAA"}, token=token)
        assert (status, body["error"]["code"]) == (401, "session_invalid")

    def test_remote_check_session_detects_stale_key(self) -> None:
        token = self.login("xena")["token"]
        device = self.get_phone_number("xena")
        status, _, _ = self.call(
            "/v1/demo/phone", {"encryptedData": device["encryptedData"], "iv": device["iv"]}, token=token
        )
        assert status == 200
        self.wx_login("xena")  # WeChat rotates the key; the gateway never saw the new one
        status, body, _ = self.call(
            "/v1/demo/phone", {"encryptedData": device["encryptedData"], "iv": device["iv"]}, token=token
        )
        assert (status, body["error"]["code"]) == (401, "session_key_stale")

    def test_stale_access_token_is_refreshed_once(self) -> None:
        token = self.login("yuri")["token"]
        device = self.get_phone_number("yuri")
        fields = {"encryptedData": device["encryptedData"], "iv": device["iv"]}
        assert self.call("/v1/demo/phone", fields, token=token)[0] == 200
        world = self.gateway.sandbox
        assert world is not None
        # another server forced a refresh
        self.io_loop.run_sync(lambda: world.issue_token("wx0000000000demo0", force_refresh=True))
        status, body, _ = self.call("/v1/demo/phone", fields, token=token)
        assert status == 200, body
        assert self.gateway.apps["demo"].wechat.calls["stable_token"] == 2

    def test_flow_not_configured_is_404(self) -> None:
        status, body, _ = self.call("/v1/demo/userinfo", {})
        assert (status, body["error"]["code"]) == (404, "flow_not_configured")


class UpstreamTroubleOverCurlTest(UpstreamTroubleTest):
    """The same faults through libcurl, the client the server uses when pycurl is installed."""

    def setUp(self) -> None:
        from tornado.httpclient import AsyncHTTPClient

        AsyncHTTPClient.configure("tornado.curl_httpclient.CurlAsyncHTTPClient")
        super().setUp()

    def tearDown(self) -> None:
        from tornado.httpclient import AsyncHTTPClient

        super().tearDown()
        AsyncHTTPClient.configure(None)


# The fields a request carries choose its flow (the rule of the HTTP API's reference).
FLOW_CHOICES = [
    ("phone", "t", {"encryptedData": "d", "iv": "i"}, "phone"),
    ("phone", "t", {"encryptedData": "d", "iv": "i", "cloudID": "c"}, "phone"),
    ("phone", "t", {"code": "c"}, "phone_code"),
    ("phone", "t", {"code": "c", "cloudID": "c"}, "phone_code"),
    ("phone", "t", {"cloudID": "c"}, "phone_cloud"),
    ("phone", "t", {}, "phone"),
    ("phone", None, {"code": "c", "encryptedData": "d", "iv": "i"}, "phone_oneshot"),
    ("userinfo", "t", {"encryptedData": "d", "iv": "i"}, "userinfo"),
    ("userinfo", "t", {"cloudID": "c"}, "userinfo_cloud"),
    ("userinfo", "t", {"cloudID": "c", "encryptedData": "d", "iv": "i"}, "userinfo"),
    ("userinfo", "t", {"cloudID": "c", "code": "x"}, "userinfo"),
    ("userinfo", None, {"cloudID": "c"}, "userinfo"),  # no token: refused by check_session
    ("login", None, {"cloudID": "c"}, "login"),
]


@pytest.mark.parametrize(("endpoint", "token", "fields", "flow"), FLOW_CHOICES)
def test_fields_choose_the_flow(endpoint: str, token: str | None, fields: dict[str, str], flow: str) -> None:
    assert choose_flow(endpoint, token, fields) == flow


def test_a_cloud_id_without_a_token_is_no_way_into_phone() -> None:
    with pytest.raises(Unauthorized):
        choose_flow("phone", None, {"cloudID": "c"})
