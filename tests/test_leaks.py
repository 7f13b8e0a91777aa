"""No secret reaches a response or a log line; phone numbers are masked in logs."""

from __future__ import annotations

import json
import time
from typing import Any

import structlog

from gateway.logs import mask_phone, redact
from gateway.sandbox.world import phone_for
from gateway.testing import GatewayTestCase
from tests.helpers import rendered_log

USERS = ["leak-a", "leak-b", "leak-c"]


class NoLeakTest(GatewayTestCase):
    def setUp(self) -> None:
        # The rendered lines, not the events: what must not leak is what a log line shows.
        self.log = self.enterContext(rendered_log())
        super().setUp()

    def exercise(self) -> tuple[list[str], list[str]]:
        """Every flow, good and bad; returns what the client saw and the login tokens."""
        seen: list[str] = []
        tokens: list[str] = []

        def call(path: str, body: dict[str, Any], token: str | None = None) -> dict[str, Any]:
            _, answer, response = self.call(path, body, token=token)
            seen.append(response.body.decode() + json.dumps(dict(response.headers)))
            if "token" in answer:
                tokens.append(answer["token"])
            return answer

        for user in USERS:
            token = str(call("/v1/demo/login", {"code": self.wx_login(user)})["token"])
            device = self.get_phone_number(user)
            call("/v1/demo/phone", {"encryptedData": device["encryptedData"], "iv": device["iv"]}, token=token)
            self.login(user)  # rotate: the next phone call falls back to the previous key
            call("/v1/demo/phone", {"encryptedData": device["encryptedData"], "iv": device["iv"]}, token=token)
            code = self.wx_login(user)
            call("/v1/demo/phone", {"code": code, "encryptedData": device["encryptedData"], "iv": device["iv"]})
            profile = self.get_user_profile(user)
            call(
                "/v1/demo/userinfo",
                {k: profile[k] for k in ("encryptedData", "iv", "rawData", "signature")},
                token=token,
            )
            # failures: reused code, bad data, masked, stale watermark, bad signature
            call("/v1/demo/login", {"code": code})
            call("/v1/demo/phone", {"encryptedData": device["encryptedData"][::-1], "iv": device["iv"]}, token=token)
            masked = self.get_phone_number(user, base_library="1.0.0")
            call("/v1/demo/phone", {"encryptedData": masked["encryptedData"], "iv": masked["iv"]}, token=token)
            old = self.get_phone_number(user, watermark={"timestamp": int(time.time()) - 86400})
            call("/v1/demo/phone", {"encryptedData": old["encryptedData"], "iv": old["iv"]}, token=token)
            call(
                "/v1/demo/userinfo",
                {"encryptedData": profile["encryptedData"], "iv": profile["iv"], "rawData": "{}", "signature": "ab"},
                token=token,
            )
        return seen, tokens

    def test_no_secret_in_responses_or_logs(self) -> None:
        seen, tokens = self.exercise()
        logs = self.log.getvalue()
        world = self.gateway.sandbox
        assert world is not None
        session_keys = [u.session_key for u in world.users.values()] + world.issued_secrets
        app_secret = self.config.apps["demo"].secret.get_secret_value()
        assert len(world.issued_secrets) >= 2 * len(USERS)
        # The run did log: one request event per call, with steps.
        events = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
        requests = [e for e in events if e.get("event") == "request"]
        assert len(requests) >= 10 * len(USERS)
        assert all("steps" in e and "request_id" in e for e in requests if e.get("flow"))
        assert any(e.get("event") == "session_key_fallback" for e in events)
        for secret in [*session_keys, app_secret]:
            assert secret not in logs
            assert not any(secret in text for text in seen)
        for user in USERS:
            assert phone_for(user) not in logs
        assert len(tokens) == len(USERS)
        for token in tokens:
            assert token not in logs


def test_redact_masks_phones_and_drops_secret_keys() -> None:
    event = {
        "event": "x",
        "session_key": "c2VjcmV0c2VjcmV0c2VjcmV0",
        "nested": {"access_token": "tok", "note": "call +8613812345678 or 13987654321"},
        "items": ["13800001111"],
    }
    out = redact(None, "info", dict(event))
    assert out["session_key"] == "***"
    assert out["nested"]["access_token"] == "***"
    assert out["nested"]["note"] == "call +86138****5678 or 139****4321"
    assert out["items"] == ["138****1111"]
    assert mask_phone("order 2024112512345678") == "order 2024112512345678"


def test_configured_logger_applies_redaction() -> None:
    with rendered_log() as buffer:
        structlog.get_logger("t").info("plugin_said", secret="hunter22", phone="13812345678")
    line = json.loads(buffer.getvalue())
    assert line["secret"] == "***"
    assert line["phone"] == "138****5678"
