"""GET /session, POST /logout, ``retryable`` in error bodies, and the transport repairs
that real mini-program clients need (percent-encoding applied twice)."""

from __future__ import annotations

import urllib.parse
from typing import Any

from gateway.sandbox.world import phone_for
from gateway.testing import GatewayTestCase

APPID = "wx0000000000demo0"


class SessionAndLogoutTest(GatewayTestCase):
    """The embedded default, which declares both flows."""

    def session(self, token: str | None) -> tuple[int, dict[str, Any], Any]:
        return self.call("/v1/demo/session", method="GET", token=token)

    def test_session_describes_a_live_token_and_the_bound_phone(self) -> None:
        login = self.login("sal")
        status, body, response = self.session(login["token"])
        assert status == 200, body
        assert body["openid"] == login["openid"]
        assert body["unionid"] == login["unionid"]
        assert 7190 <= body["expires_in"] <= 7200
        assert body["phone"] is None  # no number yet: the app shows the (paid) phone button
        device = self.get_phone_number("sal")
        assert self.call("/v1/demo/phone", {"code": device["code"]}, token=login["token"])[0] == 200
        status, body, _ = self.session(login["token"])
        number = phone_for("sal")
        assert body["phone"] == {"masked": f"{number[:3]}****{number[-4:]}", "countryCode": "86"}
        assert number not in response.body.decode() + str(body)  # only the masked form leaves

    def test_session_refuses_unknown_and_missing_tokens(self) -> None:
        status, body, _ = self.session("no-such-token")
        assert (status, body["error"]["code"], body["error"]["retryable"]) == (401, "session_invalid", True)
        status, body, _ = self.session(None)
        assert (status, body["error"]["code"]) == (401, "session_required")

    def test_logout_revokes_at_once_and_a_second_logout_is_401(self) -> None:
        token = self.login("lou")["token"]
        other = self.login("lou")["token"]  # a second device of the same user stays logged in
        status, body, response = self.call("/v1/demo/logout", token=token)
        assert status == 204, body
        assert response.body == b""
        assert "Content-Type" not in response.headers
        assert response.headers["X-Request-Id"]
        assert self.session(token)[0] == 401
        device = self.get_phone_number("lou")
        status, body, _ = self.call("/v1/demo/phone", {"code": device["code"]}, token=token)
        assert (status, body["error"]["code"]) == (401, "session_invalid")
        status, body, _ = self.call("/v1/demo/logout", token=token)
        assert (status, body["error"]["code"]) == (401, "session_invalid")
        assert self.session(other)[0] == 200

    def test_methods_of_session_and_logout(self) -> None:
        token = self.login("mel")["token"]
        status, body, response = self.call("/v1/demo/session", token=token)  # POST
        assert (status, body["error"]["code"], response.headers["Allow"]) == (405, "method_not_allowed", "GET")
        status, body, response = self.call("/v1/demo/logout", method="GET", token=token)
        assert (status, response.headers["Allow"]) == (405, "POST")
        assert self.session(token)[0] == 200  # neither refused call revoked anything

    def test_single_use_codes_never_appear_retryable(self) -> None:
        code = self.wx_login("cody")
        assert self.call("/v1/demo/login", {"code": code})[0] == 200
        status, body, _ = self.call("/v1/demo/login", {"code": code})
        assert (status, body["error"]["code"], body["error"]["retryable"]) == (409, "code_used", False)

    def test_busy_wechat_before_the_code_was_used_is_retryable(self) -> None:
        self.arm_fault("jscode2session", errcode=-1)
        code = self.wx_login("bea")
        status, body, response = self.call("/v1/demo/login", {"code": code})
        assert (status, body["error"]["code"], body["error"]["retryable"]) == (503, "upstream_busy", True)
        assert response.headers["Retry-After"] == "2"
        status, body, _ = self.call("/v1/demo/login", {"code": code})  # the resend it allowed works
        assert status == 200, body


ORDER_MATTERS = """
storage: {plugin: memory}
pipelines:
  login:
    - rate_limit: {per: ip, limit: 2, window: 60}
    - code2session
    - rate_limit: {per: openid, limit: 1, window: 60}
    - issue_session
apps:
  demo: {appid: wx0000000000demo0, secret: sandbox-demo-secret, upstream: sandbox}
"""


class RetryableFollowsTheStepOrderTest(GatewayTestCase):
    """The same error is retryable before code2session spent the code, not after it."""

    config_text = ORDER_MATTERS

    def test_rate_limit_after_the_code_was_spent_is_not_retryable(self) -> None:
        assert self.call("/v1/demo/login", {"code": self.wx_login("ray")})[0] == 200
        status, body, _ = self.call("/v1/demo/login", {"code": self.wx_login("ray")})
        assert (status, body["error"]["code"], body["error"]["retryable"]) == (429, "rate_limited", False)
        status, body, _ = self.call("/v1/demo/login", {"code": self.wx_login("ray")})  # the per-ip limit
        assert (status, body["error"]["code"], body["error"]["retryable"]) == (429, "rate_limited", True)

    def test_built_in_session_and_logout_apply_to_a_file_without_them(self) -> None:
        assert set(self.gateway.apps["demo"].pipelines) == {"login", "session", "logout"}
        token = self.call("/v1/demo/login", {"code": self.wx_login("old")})[1]["token"]
        status, body, _ = self.call("/v1/demo/session", method="GET", token=token)
        assert (status, body["phone"]) == (200, None)
        assert self.call("/v1/demo/logout", token=token)[0] == 204
        assert self.call("/v1/demo/session", method="GET", token=token)[0] == 401


LOGOUT_WEBHOOK = """
storage: {plugin: memory}
webhooks:
  endpoints: [{name: crm, url: "http://127.0.0.1:9/hook", secret: "0123456789abcdef"}]
  poll_interval: 60
pipelines:
  login: [code2session, issue_session]
  logout: [check_session, revoke_session, {webhook: {event: user.logout}}]
apps:
  demo: {appid: wx0000000000demo0, secret: sandbox-demo-secret, upstream: sandbox}
"""


class LogoutWebhookTest(GatewayTestCase):
    config_text = LOGOUT_WEBHOOK

    def test_each_logout_is_an_event_of_its_own(self) -> None:
        for _ in range(2):
            token = self.call("/v1/demo/login", {"code": self.wx_login("wes")})[1]["token"]
            assert self.call("/v1/demo/logout", token=token)[0] == 204
        events = self.io_loop.run_sync(lambda: self.gateway.storage.list_events(None, 10))
        assert [e.type for e in events] == ["user.logout", "user.logout"]
        assert len({e.id for e in events}) == 2  # a request with nothing single-use is keyed by its id
        assert all(e.payload["openid"] == events[0].payload["openid"] for e in events)


class DoubleEncodedDataTest(GatewayTestCase):
    """What a client sends that calls encodeURIComponent itself and then hands the value
    to a query-string builder (wx.request's GET data) that encodes it once more."""

    def fresh(self, user: str) -> tuple[str, str, str]:
        code = self.wx_login(user)
        device = self.get_phone_number(user)
        return code, device["encryptedData"], device["iv"]

    @staticmethod
    def twice(value: str) -> str:
        return urllib.parse.quote(urllib.parse.quote(value, safe=""), safe="")

    def assert_phone(self, status: int, body: dict[str, Any], user: str) -> None:
        assert status == 200, body
        assert body["purePhoneNumber"] == phone_for(user)

    def test_get_with_values_encoded_twice(self) -> None:
        code, data, iv = self.fresh("gil")
        assert "+" in data + iv or "/" in data + iv  # the characters that encoding changes
        url = f"/v1/demo/phone?code={code}&encryptedData={self.twice(data)}&iv={self.twice(iv)}"
        status, body, _ = self.call(url, method="GET")
        self.assert_phone(status, body, "gil")

    def test_form_post_with_values_encoded_twice(self) -> None:
        code, data, iv = self.fresh("flo")
        form = f"code={code}&encryptedData={self.twice(data)}&iv={self.twice(iv)}".encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        status, body, _ = self.call("/v1/demo/phone", raw_body=form, headers=headers)
        self.assert_phone(status, body, "flo")

    def test_json_body_with_values_encoded_once(self) -> None:
        code, data, iv = self.fresh("jo")
        once = {"code": code, "encryptedData": urllib.parse.quote(data, safe=""), "iv": urllib.parse.quote(iv, safe="")}
        status, body, _ = self.call("/v1/demo/phone", once)
        self.assert_phone(status, body, "jo")

    def test_three_times_encoded_is_refused_precisely(self) -> None:
        code, data, iv = self.fresh("tri")
        thrice = urllib.parse.quote(self.twice(data), safe="")
        status, body, _ = self.call("/v1/demo/phone", {"code": code, "encryptedData": thrice, "iv": iv})
        assert (status, body["error"]["code"]) == (400, "invalid_encrypted_data")


class SandboxBaseLibraryTest(GatewayTestCase):
    def test_phone_code_only_from_2_21_2(self) -> None:
        self.wx_login("old")
        assert "code" not in self.get_phone_number("old", base_library="2.21.1")
        assert "code" not in self.get_phone_number("old", base_library="1.9.0")
        assert "code" in self.get_phone_number("old", base_library="2.21.2")
        assert "code" in self.get_phone_number("old")  # default 3.0.0
