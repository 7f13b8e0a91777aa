"""Replay rejection and webhook de-duplication key on the decoded ciphertext, not its text.

Base64 ignores the unused low bits of the last character before the padding, so one
ciphertext has several spellings; Python's decoder (and so the gateway's decrypt) takes
them all. A 160-byte ciphertext (160 = 3 * 53 + 1) ends in one byte spread over two
characters and '==': the second character carries 2 bits of it and 4 unused ones.
Each test sends the exact data, a sibling spelling and a copy with line breaks and tabs
inside; were the key computed from the text, the sibling would count as new.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import pytest

from gateway.sandbox.world import phone_for
from gateway.testing import GatewayTestCase
from gateway.wechat import crypto
from tests.webhook_receiver import Receiver

APPID = "wx0000000000demo0"
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
CIPHERTEXT_BYTES = 160


def spellings(data: str) -> tuple[str, str]:
    """A sibling spelling of ``data`` (the unused bits of its last character flipped) and
    a copy wrapped with '\\n' and '\\t'."""
    assert data.endswith("==")
    last = ALPHABET.index(data[-3])
    sibling = data[:-3] + ALPHABET[last ^ 0b0101] + "=="
    wrapped = data[:60] + "\n" + data[60:120] + "\t" + data[120:]
    return sibling, wrapped


def encrypt_160(session_key: str, user: str) -> tuple[str, str]:
    """Phone data for ``user`` whose ciphertext is 160 bytes long."""
    payload: dict[str, Any] = {
        "phoneNumber": phone_for(user),
        "purePhoneNumber": phone_for(user),
        "countryCode": "86",
        "watermark": {"appid": APPID, "timestamp": int(time.time())},
        "pad": "",
    }
    # PKCS#7 pads 144 to 159 bytes of plaintext to 160
    size = len(json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode())
    payload["pad"] = "x" * (150 - size)
    data, iv = crypto.encrypt_json(session_key, payload)
    assert len(base64.b64decode(data)) == CIPHERTEXT_BYTES
    return data, iv


class _DeviceMixin(GatewayTestCase):
    def device_data(self, user: str) -> tuple[str, dict[str, str]]:
        """A token for ``user`` and three spellings of one phone payload, as fields."""
        token = self.login(user)["token"]
        world: Any = self.gateway.sandbox
        data, iv = encrypt_160(world.users[(APPID, user)].session_key, user)
        sibling, wrapped = spellings(data)
        # what the key must see through: other text (the sibling's even after the gateway's
        # repairs), the same bytes
        assert crypto.repair_base64(sibling) != crypto.repair_base64(data)
        assert wrapped != data
        for spelling in (sibling, crypto.repair_base64(wrapped)):
            assert base64.b64decode(spelling, validate=True) == base64.b64decode(data, validate=True)
        return token, {"exact": data, "sibling": sibling, "wrapped": wrapped, "iv": iv}


REPLAY = """
storage: {plugin: memory}
pipelines:
  login: [code2session, issue_session]
  phone:
    - check_session
    - decrypt: {kind: phone}
    - watermark: {max_age: 600, replay: reject}
    - respond
apps:
  demo: {appid: wx0000000000demo0, secret: demo-secret-123, upstream: sandbox}
"""


class ReplayKeyTest(_DeviceMixin):
    config_text = REPLAY

    def test_every_spelling_of_accepted_data_is_a_replay(self) -> None:
        token, data = self.device_data("spell")
        status, body, _ = self.call("/v1/demo/phone", {"encryptedData": data["exact"], "iv": data["iv"]}, token=token)
        assert (status, body["purePhoneNumber"]) == (200, phone_for("spell"))
        for spelling in ("sibling", "wrapped"):
            fields = {"encryptedData": data[spelling], "iv": data["iv"]}
            status, body, _ = self.call("/v1/demo/phone", fields, token=token)
            # 'replayed' comes from the watermark step, after decrypt: the spelling decrypted
            assert (status, body.get("error", {}).get("code")) == (422, "replayed"), spelling
        # other data from the same user is no replay
        token, fresh = self.device_data("spell")
        fields = {"encryptedData": fresh["sibling"], "iv": fresh["iv"]}
        assert self.call("/v1/demo/phone", fields, token=token)[0] == 200

    def test_the_sibling_spelling_first_spends_the_exact_data(self) -> None:
        token, data = self.device_data("sibling-first")
        fields = {"encryptedData": data["sibling"], "iv": data["iv"]}
        assert self.call("/v1/demo/phone", fields, token=token)[0] == 200
        status, body, _ = self.call("/v1/demo/phone", {"encryptedData": data["exact"], "iv": data["iv"]}, token=token)
        assert (status, body.get("error", {}).get("code")) == (422, "replayed")


WEBHOOK = """
storage: {{plugin: memory}}
webhooks:
  poll_interval: 0.05
  endpoints:
    - {{name: crm, url: "{url}", secret: "crm-secret-0123456789"}}
pipelines:
  login: [code2session, issue_session]
  phone:
    - check_session
    - decrypt: {{kind: phone}}
    - webhook: {{event: phone.bound}}
    - respond
apps:
  demo: {{appid: wx0000000000demo0, secret: demo-secret-123, upstream: sandbox}}
"""


@pytest.mark.usefixtures("receiver")
class WebhookEventIdTest(_DeviceMixin):
    crm: Receiver

    def get_config(self) -> Any:
        self.config_text = WEBHOOK.format(url=self.crm.url)
        return super().get_config()

    def event_ids(self) -> set[str]:
        storage: Any = self.gateway.storage
        return {event.id.split(":")[0] for event in storage.events.values() if event.type == "phone.bound"}

    def test_every_spelling_of_one_binding_is_one_event(self) -> None:
        token, data = self.device_data("dedupe")
        for spelling in ("exact", "sibling", "wrapped"):
            fields = {"encryptedData": data[spelling], "iv": data["iv"]}
            status, body, _ = self.call("/v1/demo/phone", fields, token=token)
            assert (status, body["purePhoneNumber"]) == (200, phone_for("dedupe")), spelling
        assert len(self.event_ids()) == 1

        async def delivered() -> None:
            deadline = time.monotonic() + 5
            while not self.crm.delivered():
                assert time.monotonic() < deadline, "nothing delivered"
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.3)  # time enough for a second event, were there one

        self.io_loop.run_sync(delivered, timeout=10)
        assert [event["id"] for event in self.crm.delivered()] == list(self.event_ids())
