"""The example plugin tested with wxgate's own harness (gateway.testing)."""

from __future__ import annotations

import asyncio

import pytest
from wxgate_blocklist.hooks import NEW_USERS
from wxgate_blocklist.step import BlocklistOptions, PhoneBlocked, PhoneBlocklist

from gateway.registry import Registry
from gateway.sandbox.world import phone_for
from gateway.testing import GatewayTestCase, make_context

# --- the step alone, on a fake context ------------------------------------------------


def run(step: PhoneBlocklist, number: str) -> None:
    ctx = make_context(data={"purePhoneNumber": number, "countryCode": "86"})
    asyncio.run(step(ctx))


def test_blocked_prefix_is_refused_with_the_plugin_error() -> None:
    step = PhoneBlocklist(BlocklistOptions(prefixes=["170", "171"], message="No virtual carriers."))
    with pytest.raises(PhoneBlocked) as caught:
        run(step, "17012345678")
    assert caught.value.status == 403
    assert caught.value.body()["error"]["message"] == "No virtual carriers."
    run(step, "13812345678")  # not on the list: no error


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="digits only"):
        BlocklistOptions(prefixes=["17x"])
    with pytest.raises(ValueError, match="at least 1"):
        BlocklistOptions(prefixes=[])


def test_found_through_its_entry_point_only() -> None:
    registry = Registry.discover()
    assert registry.steps["phone_blocklist"] is PhoneBlocklist
    assert "wxgate-plugin-example" in registry.origins["step 'phone_blocklist'"]


# --- a full sandbox flow: the step in a YAML pipeline, the hook installed --------------

BLOCKED_USER = next(f"user{i}" for i in range(1000) if phone_for(f"user{i}").startswith("139"))
ALLOWED_USER = next(f"user{i}" for i in range(1000) if not phone_for(f"user{i}").startswith("139"))


class BlocklistFlowTest(GatewayTestCase):
    config_text = """
pipelines:
  login: [code2session, persist_user, issue_session]
  phone:
    - check_session
    - decrypt: {kind: phone}
    - phone_blocklist: {prefixes: ["139"]}
    - respond
apps:
  demo: {appid: wx0000000000demo0, secret: demo-secret-123, upstream: sandbox}
"""

    def phone(self, user: str) -> tuple[int, dict[str, object]]:
        token = self.login(user)["token"]
        device = self.get_phone_number(user)
        status, body, _ = self.call(
            "/v1/demo/phone", {"encryptedData": device["encryptedData"], "iv": device["iv"]}, token=token
        )
        return status, body

    def test_pipeline_with_the_plugin_step(self) -> None:
        status, body = self.phone(BLOCKED_USER)
        assert status == 403
        assert body["error"] == {
            "code": "phone_blocked",
            "message": "This phone number cannot be used here.",
            "hint": "Use another phone number, or contact support.",
            "retryable": False,
        }
        status, body = self.phone(ALLOWED_USER)
        assert status == 200
        assert body["purePhoneNumber"] == phone_for(ALLOWED_USER)

    def test_the_hook_counts_first_logins(self) -> None:
        before = NEW_USERS["demo"]
        self.login("fresh-user")
        self.login("fresh-user")
        assert NEW_USERS["demo"] == before + 1
        self.log_events.assert_none("hook_failed")  # a hook that raised would not have failed the request
