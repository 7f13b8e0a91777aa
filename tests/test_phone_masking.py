"""Phone numbers of every country are masked wherever the masked form is used: stored
(persist_phone hashed and masked), in webhooks (phone: masked), to hooks (masked_phone),
and in every log line. A mainland number keeps WeChat's own masked form (138****6666);
any other shows its country code and the last four digits (+1 ******0123)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import phonenumbers
import pytest
import structlog

from gateway.hookspecs import hookimpl
from gateway.logs import mask_phone, redact
from gateway.phones import mask_phones_in_text, masked_national, masked_phone, parse_e164
from gateway.sandbox.world import phone_for
from gateway.sealing import keyed_hash
from gateway.testing import GatewayTestCase, LeakWatch
from tests.helpers import rendered_log
from tests.webhook_receiver import Receiver

APPID = "wx0000000000demo0"
HASH_KEY = "0123456789abcdef-hash"
# (E.164, what WeChat gives: phoneNumber, purePhoneNumber, countryCode; the masked form)
FOREIGN = {
    "us": ("+12025550123", "2025550123", "1", "+1 ******0123"),
    "hong_kong": ("+85251234567", "51234567", "852", "+852 ****4567"),
    "uk": ("+447400123456", "7400123456", "44", "+44 ******3456"),
}


def spellings(e164: str) -> set[str]:
    """The ways a number could show up in a log line if it escaped masking."""
    number = phonenumbers.parse(e164)
    national = phonenumbers.national_significant_number(number)
    formats = (phonenumbers.PhoneNumberFormat.INTERNATIONAL, phonenumbers.PhoneNumberFormat.NATIONAL)
    return {e164, e164[1:], national, *(phonenumbers.format_number(number, f) for f in formats)}


def watch(e164: str) -> None:
    # the session's leak check fails the run if any of these is in any log line of it
    LeakWatch.log_secrets.update(spellings(e164))


# --- the masked form ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pure", "country", "shown", "national"),
    [
        ("13812345678", "86", "138****5678", "138****5678"),  # mainland: as before
        ("138****5678", "86", "138****5678", "138****5678"),  # masked by WeChat already
        ("2025550123", "1", "+1 ******0123", "******0123"),
        ("51234567", "852", "+852 ****4567", "****4567"),
        ("7400123456", "44", "+44 ******3456", "******3456"),
        ("07400123456", "44", "+44 ******3456", "******3456"),  # trunk 0 left in by a client
        ("202-555-0123", "1", "+1 ******0123", "******0123"),
        ("1012345678", "86", "******5678", "******5678"),  # mainland, not a mobile
        ("1234567", "1", "+1 ****567", "****567"),  # short: as many hidden as shown at least
        ("12", "1", "+1 *2", "*2"),
        ("2025550123", "", "******0123", "******0123"),
        ("2025550123", "+1", "+1 ******0123", "******0123"),
        ("<b>2025550123</b>", "1", "+1 ******0123", "******0123"),  # only digits come out
    ],
)
def test_masked_form(pure: str, country: str, shown: str, national: str) -> None:
    assert masked_phone(pure, country) == shown
    assert masked_national(pure, country) == national


# --- free text (log lines) ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        # mainland mobiles as before, with separators now too
        ("call +8613812345678 or 13987654321", "call +86138****5678 or 139****4321"),
        ("8613812345678", "86138****5678"),
        ("138 8075 5743 / 138-8075-5743", "138 **** 5743 / 138-****-5743"),
        ("id13812345678", "id138****5678"),
        ("手机号13812345678已绑定", "手机号138****5678已绑定"),
        # with a country code
        ("+12025550123", "+1 ******0123"),
        ("tel:+1 202-555-0123.", "tel:+1 ******0123."),
        ("+1 (202) 555-0123", "+1 ******0123"),
        ("hk +85251234567, uk +44 7400 123456", "hk +852 ****4567, uk +44 ******3456"),
        ("/v1/%2B12025550123/phone", "/v1/+1 ******0123/phone"),
        ("+1 202 555 0123 2024", "+1 ******0123 2024"),  # trailing group not part of it
        ("00447400123456", "**********3456"),  # international prefix
        # national numbers, any country
        ("purePhoneNumber=2025550123", "purePhoneNumber=******0123"),
        ("'51234567'", "'****4567'"),
        ("(202) 555-0123", "(***) ***-0123"),
        ("020 7946 0958", "*** **** 0958"),
        ("电话7400123456", "电话******3456"),
    ],
)
def test_numbers_in_free_text_are_masked(text: str, masked: str) -> None:
    assert mask_phones_in_text(text) == masked
    assert mask_phone(text) == masked  # the name gateway.logs has always had


@pytest.mark.parametrize(
    "text",
    [
        "order 2024112512345678",  # too long for a number
        "fdaeee90524947f7160c3e6e324b61d0",  # a request id: digits between letters
        "watermark appid 'wx0000000000demo0'",
        "127.0.0.1 192.168.100.200 10.20.30.40:8080",
        "2026-11-25T22:31:43.167161Z 2026-11-25 22:31:43",
        "0.1234567891 v1.2345678 12:34:56.1234567",
        "took 1732523503123 ms",  # 13 digits: not a possible number
        "HTTP 500 after 4 attempts",
        "138****5678",
        "",
    ],
)
def test_what_is_no_number_is_left_alone(text: str) -> None:
    assert mask_phones_in_text(text) == text


def test_redact_masks_foreign_numbers_in_events() -> None:
    event = {
        "event": "plugin_said",
        "phone": "+12025550123",
        "nested": {"note": "call +44 7400 123456 or 51234567"},
        "items": ["+85251234567", 2025550123],
        "request_id": "9052494716032461fdaeee90e324b61d",
    }
    out = redact(None, "info", dict(event))
    assert out["phone"] == "+1 ******0123"
    assert out["nested"]["note"] == "call +44 ******3456 or ****4567"
    assert out["items"] == ["+852 ****4567", 2025550123]  # numbers (not text) are no phone
    assert out["request_id"] == event["request_id"]


def test_configured_logger_masks_foreign_numbers() -> None:
    for number in ("+12025550123", "+85251234567", "+447400123456"):
        watch(number)
    with rendered_log() as buffer:
        structlog.get_logger("t").info("plugin_said", us="+1 202-555-0123", hk="5123 4567", uk="+447400123456")
    line = json.loads(buffer.getvalue())
    assert (line["us"], line["hk"], line["uk"]) == ("+1 ******0123", "**** 4567", "+44 ******3456")


@pytest.mark.parametrize("prefix", [f"1{d}{e}" for d in "3456789" for e in "0123456789"])
def test_mainland_mobiles_mask_as_libphonenumber_reads_them(prefix: str) -> None:
    """The shortcut for WeChat's usual answer (countryCode 86, an 11-digit mobile) gives what
    libphonenumber's reading of the number gives, for every mobile prefix."""
    for tail in ("00000000", "12345678", "99999999"):
        pure = prefix + tail
        number = phonenumbers.parse(f"+86{pure}", None)
        national = phonenumbers.national_significant_number(number)
        assert (number.country_code, national) == (86, pure)
        assert masked_phone(pure, "86") == f"{national[:3]}****{national[-4:]}"
        assert masked_national(pure, "86") == masked_phone(pure, "86")


@pytest.mark.parametrize("e164", ["+12025550123", "+85251234567", "+447400123456", "+8613812345678"])
def test_parse_e164_accepts_valid_numbers(e164: str) -> None:
    number = parse_e164(e164)
    assert number is not None
    assert phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164) == e164


@pytest.mark.parametrize(
    "text", ["12025550123", "+1 202 555 0123", "+1202555012", "+4407400123456", "+0123456789", "+1", "", "+1202555012a"]
)
def test_parse_e164_refuses_anything_else(text: str) -> None:
    assert parse_e164(text) is None


# --- end to end: the sandbox hands out foreign numbers, the gateway masks them --------------------


class Recorder:
    def __init__(self) -> None:
        self.bound: list[dict[str, str]] = []

    @hookimpl
    def wxgate_phone_bound(self, openid: str, masked_phone: str, country_code: str) -> None:
        self.bound.append({"openid": openid, "masked": masked_phone, "country": country_code})


RECORDER = Recorder()

CONFIG = """
storage: {{plugin: memory}}
webhooks:
  poll_interval: 0.05
  endpoints:
    - {{name: crm, url: "{url}", secret: "crm-secret-0123456789"}}
pipelines:
  login: [code2session, persist_user, issue_session]
  phone:
    - check_session
    - decrypt: {{kind: phone}}
    - watermark
    - mask_guard
    - persist_phone: {{store_phone: masked}}
    - webhook: {{event: phone.bound}}
    - respond
  phone_code:
    - check_session
    - phone_code
    - watermark
    - mask_guard
    - persist_phone: {{store_phone: hashed, hash_key: "{hash_key}"}}
    - webhook: {{event: phone.bound}}
    - respond
apps:
  demo: {{appid: wx0000000000demo0, secret: demo-secret-123, upstream: sandbox}}
"""


@pytest.mark.usefixtures("receiver")
class ForeignNumberTest(GatewayTestCase):
    crm: Receiver
    hook_plugins = [RECORDER]

    def get_config(self) -> Any:
        self.config_text = CONFIG.format(url=self.crm.url, hash_key=HASH_KEY)
        return super().get_config()

    def setUp(self) -> None:
        RECORDER.bound.clear()
        # the lines as written (redaction included), not the events
        self.log = self.enterContext(rendered_log())
        super().setUp()

    def delivered(self, count: int) -> list[dict[str, Any]]:
        async def wait() -> None:
            deadline = time.monotonic() + 5
            while len(self.crm.delivered()) < count:
                assert time.monotonic() < deadline, f"{len(self.crm.delivered())} of {count} delivered"
                await asyncio.sleep(0.02)

        self.io_loop.run_sync(wait, timeout=10)
        return self.crm.delivered()

    def bind_both_ways(self, user: str, e164: str) -> tuple[dict[str, Any], list[dict[str, Any]], list[Any]]:
        """The number bound with encryptedData (stored masked), then with a phone code
        (stored hashed); returns the login, the two answers and the stored bindings."""
        watch(e164)
        login = self.login(user)
        device = self.get_phone_number(user, phone=e164)
        answers = []
        for fields in ({"encryptedData": device["encryptedData"], "iv": device["iv"]}, {"code": device["code"]}):
            status, body, _ = self.call("/v1/demo/phone", fields, token=login["token"])
            assert status == 200, body
            answers.append(body)
        storage: Any = self.gateway.storage
        phones = self.io_loop.run_sync(lambda: storage.get_phones(APPID, login["openid"]))
        return login, answers, phones

    def check_country(self, name: str) -> None:
        e164, pure, country, masked = FOREIGN[name]
        login, answers, phones = self.bind_both_ways(f"abroad-{name}", e164)
        national = masked.split(" ")[1]

        # the mini program gets the whole number, in WeChat's format, from either flow
        wechat = {"phoneNumber": e164, "purePhoneNumber": pure, "countryCode": country}
        assert answers == [wechat, wechat]

        # at rest: masked (key and form), then hashed (a keyed hash of the full number)
        masked_binding, hashed_binding = sorted(phones, key=lambda p: p.key != f"+{country}:{national}")
        assert (masked_binding.key, masked_binding.masked, masked_binding.number) == (
            f"+{country}:{national}",
            masked,
            None,
        )
        assert (hashed_binding.key, hashed_binding.masked, hashed_binding.number) == (
            keyed_hash(HASH_KEY.encode(), e164),
            masked,
            None,
        )
        storage: Any = self.gateway.storage
        assert not any(spelling in repr(storage.phones) for spelling in spellings(e164))

        # GET /session shows the masked form only
        status, body, _ = self.call("/v1/demo/session", method="GET", token=login["token"])
        assert status == 200, body
        assert body["phone"] == {"masked": masked, "countryCode": country}

        # webhooks (phone: masked) and hooks
        events = [e for e in self.delivered(2) if e["type"] == "phone.bound"]
        assert [e["phone"] for e in events] == [{"masked": masked, "countryCode": country}] * 2
        assert RECORDER.bound == [{"openid": login["openid"], "masked": masked, "country": country}] * 2

        # a log line that carries the number (WeChat's watermark names it as its appid)
        mark = self.get_phone_number(f"abroad-{name}", phone=e164, watermark={"appid": e164})
        fields = {"encryptedData": mark["encryptedData"], "iv": mark["iv"]}
        status, body, _ = self.call("/v1/demo/phone", fields, token=login["token"])
        assert (status, body["error"]["code"]) == (422, "watermark_appid_mismatch")
        # and a request path
        assert self.call(f"/v1/{e164}/phone", {"code": "x"})[0] == 404

        logs = self.log.getvalue()
        lines = [json.loads(line) for line in logs.splitlines()]
        assert any(line.get("detail") == f"watermark appid '{masked}'" for line in lines), logs
        assert any(line.get("path") == f"/v1/{masked}/phone" for line in lines), logs
        found = [s for s in spellings(e164) if s in logs + json.dumps(self.crm.delivered())]
        assert not found

    def test_us_number(self) -> None:
        self.check_country("us")

    def test_hong_kong_number(self) -> None:
        self.check_country("hong_kong")

    def test_uk_number(self) -> None:
        self.check_country("uk")

    def test_a_masked_foreign_number_from_an_old_base_library_is_refused(self) -> None:
        token = self.login("abroad-old")["token"]
        device = self.get_phone_number("abroad-old", phone="+12025550123", base_library="1.9.0")
        fields = {"encryptedData": device["encryptedData"], "iv": device["iv"]}
        status, body, _ = self.call("/v1/demo/phone", fields, token=token)
        assert (status, body["error"]["code"]) == (422, "phone_masked")

    def test_the_sandbox_refuses_a_number_not_in_e164(self) -> None:
        self.wx_login("abroad-bad")
        for phone in ["12025550123", "+1 202 555 0123", "+1202555012", "+4407400123456", 12025550123, ""]:
            status, body, _ = self.call("/_sandbox/demo/getPhoneNumber", {"user": "abroad-bad", "phone": phone})
            assert (status, body["error"]["code"]) == (400, "invalid_phone"), phone

    def test_a_mainland_number_given_in_e164_is_as_wechat_gives_one(self) -> None:
        number = phone_for("abroad-home")
        watch("+86" + number)
        token = self.login("abroad-home")["token"]
        code = self.get_phone_number("abroad-home", phone="+86" + number)["code"]
        status, body, _ = self.call("/v1/demo/phone", {"code": code}, token=token)
        assert (status, body) == (200, {"phoneNumber": number, "purePhoneNumber": number, "countryCode": "86"})
        events = [e for e in self.delivered(1) if e["type"] == "phone.bound"]
        assert events[0]["phone"] == {"masked": f"{number[:3]}****{number[-4:]}", "countryCode": "86"}
