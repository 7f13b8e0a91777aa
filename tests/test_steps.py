"""Each built-in step awaited alone on a test context; the memory storage's key rotation."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

import pytest
from Crypto.Cipher import AES

from gateway.context import Context
from gateway.errors import (
    DecryptFailed,
    GatewayError,
    InvalidEncryptedData,
    InvalidField,
    MissingField,
    PhoneMasked,
    SessionExpired,
    SessionInvalid,
    SignatureMismatch,
    Unauthorized,
    UnexpectedPayload,
    WatermarkExpired,
    WatermarkMismatch,
)
from gateway.registry import Registry
from gateway.storage import LoginSession
from gateway.testing import TEST_APPID, make_app_config, make_context, make_session
from gateway.wechat.client import WeChatClient
from wxgate_plugins.steps.check_session import CheckSession, CheckSessionOptions
from wxgate_plugins.steps.code2session import Code2Session
from wxgate_plugins.steps.decrypt import Decrypt, DecryptOptions
from wxgate_plugins.steps.issue_session import IssueSession, IssueSessionOptions
from wxgate_plugins.steps.mask_guard import MaskGuard, MaskGuardOptions
from wxgate_plugins.steps.respond import Respond, RespondOptions
from wxgate_plugins.steps.verify_signature import VerifySignature, VerifySignatureOptions
from wxgate_plugins.steps.watermark import Watermark, WatermarkOptions
from wxgate_plugins.storages.memory import MemoryOptions, MemoryStorage

T = TypeVar("T")

KEY_OLD = base64.b64encode(b"old-key-16-bytes").decode()
KEY_NEW = base64.b64encode(b"new-key-16-bytes").decode()
KEY_OTHER = base64.b64encode(b"xyz-key-16-bytes").decode()
IV = b"iv-iv-iv-16bytes"
OPENID = "o-alice"


def run(awaitable: Awaitable[T]) -> T:
    async def main() -> T:
        return await awaitable

    return asyncio.run(main())


def storage() -> MemoryStorage:
    return MemoryStorage(MemoryOptions())


def encrypt(payload: dict[str, Any], session_key: str, iv: bytes = IV) -> dict[str, str]:
    """What the mini program sends: encryptedData and iv, built with raw AES-CBC/PKCS#7."""
    plain = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    n = 16 - len(plain) % 16
    cipher = AES.new(base64.b64decode(session_key), AES.MODE_CBC, iv).encrypt(plain + bytes([n]) * n)
    return {"encryptedData": base64.b64encode(cipher).decode(), "iv": base64.b64encode(iv).decode()}


def phone_payload(appid: str = TEST_APPID, stamp: float | None = None, number: str = "13800001111") -> dict[str, Any]:
    return {
        "phoneNumber": number,
        "purePhoneNumber": number,
        "countryCode": "86",
        "watermark": {"appid": appid, "timestamp": int(time.time()) if stamp is None else stamp},
    }


def userinfo_payload(open_id: str = OPENID) -> dict[str, Any]:
    return {
        "openId": open_id,
        "nickName": "小明",
        "gender": 1,
        "watermark": {"appid": TEST_APPID, "timestamp": int(time.time())},
    }


def error_of(step: Any, ctx: Context) -> GatewayError:
    """Await the step and return the GatewayError it raised (fails if it raised none)."""
    with pytest.raises(GatewayError) as exc_info:
        run(step(ctx))
    return exc_info.value


# --- code2session -----------------------------------------------------------------------------


@pytest.mark.parametrize("fields", [{}, {"code": ""}, {"other": "x"}])
def test_code2session_missing_code(fields: dict[str, str]) -> None:
    ctx = make_context(fields)
    err = error_of(Code2Session(Code2Session.Options()), ctx)
    assert type(err) is MissingField
    assert "code is required" in err.client_message
    assert ctx.wechat.calls == {}
    assert ctx.session is None


@pytest.mark.parametrize(
    "code", ["has space", "a/b", "../../etc", "code?x=1", "c" * 129, "\u0441ode", "abc&secret=x", "%2e"]
)
def test_code2session_invalid_code(code: str) -> None:
    ctx = make_context({"code": code})
    err = error_of(Code2Session(Code2Session.Options()), ctx)
    assert type(err) is InvalidField
    assert err.status == 400
    assert ctx.wechat.calls == {}
    assert ctx.session is None


def test_code2session_refuses_code_with_trailing_newline() -> None:
    ctx = make_context({"code": "0a1b2c3d\n"})
    err = error_of(Code2Session(Code2Session.Options()), ctx)
    assert type(err) is InvalidField
    assert ctx.wechat.calls == {}


class FakeWeChat(WeChatClient):
    def __init__(self, answers: list[dict[str, Any]]) -> None:
        app = make_app_config()
        memory = Registry.discover().storages["memory"]
        super().__init__(app, "http://127.0.0.1:9", memory(memory.Options()))
        self.answers = answers
        self.codes: list[str] = []

    async def code2session(self, code: str) -> dict[str, Any]:
        self.codes.append(code)
        return self.answers.pop(0)


def test_code2session_records_keys_and_keeps_the_previous_one() -> None:
    store = storage()
    fake = FakeWeChat(
        [
            {"openid": OPENID, "session_key": KEY_OLD, "unionid": "u-alice"},
            {"openid": OPENID, "session_key": KEY_NEW},
        ]
    )
    step = Code2Session(Code2Session.Options())
    first = make_context({"code": "code-1"}, storage=store)
    first.wechat = fake
    run(step(first))
    assert first.session is not None
    assert first.session.openid == OPENID
    assert first.session.unionid == "u-alice"
    assert first.session.session_key.reveal() == KEY_OLD
    assert first.session.previous_session_key is None

    second = make_context({"code": "code-2"}, storage=store)
    second.wechat = fake
    run(step(second))
    assert fake.codes == ["code-1", "code-2"]
    assert second.session is not None
    assert second.session.session_key.reveal() == KEY_NEW
    assert second.session.previous_session_key is not None
    assert second.session.previous_session_key.reveal() == KEY_OLD
    assert second.session.unionid == "u-alice"  # kept although the second answer had none
    keys = run(store.get_session_keys(TEST_APPID, OPENID))
    assert keys is not None
    assert (keys.session_key, keys.previous_session_key) == (KEY_NEW, KEY_OLD)


# --- issue_session ----------------------------------------------------------------------------


def test_issue_session_stores_only_a_hash_and_answers_without_session_key() -> None:
    store = storage()
    session = make_session(OPENID, KEY_NEW, KEY_OLD)
    session.unionid = "u-alice"
    ctx = make_context(storage=store, session=session)
    before = time.time()
    run(IssueSession(IssueSessionOptions(ttl=900))(ctx))
    after = time.time()

    assert set(ctx.response) == {"token", "openid", "unionid", "expires_in"}
    token = ctx.response["token"]
    assert isinstance(token, str)
    assert len(token) >= 40
    assert ctx.response["openid"] == OPENID
    assert ctx.response["unionid"] == "u-alice"
    assert ctx.response["expires_in"] == 900
    rendered = json.dumps(ctx.response)
    assert KEY_NEW not in rendered
    assert KEY_OLD not in rendered
    assert "session_key" not in rendered

    digest = hashlib.sha256(token.encode()).hexdigest()
    assert list(store.sessions) == [digest]
    assert token not in store.sessions
    stored = store.sessions[digest]
    assert stored.token_hash == digest
    assert (stored.appid, stored.openid, stored.unionid) == (TEST_APPID, OPENID, "u-alice")
    assert before <= stored.created_at <= after
    assert stored.expires_at - stored.created_at == pytest.approx(900)
    assert not stored.expired()


def test_issue_session_tokens_are_unique() -> None:
    store = storage()
    tokens = set()
    for _ in range(5):
        ctx = make_context(storage=store, session=make_session(OPENID, KEY_NEW))
        run(IssueSession(IssueSessionOptions())(ctx))
        assert ctx.response["expires_in"] == 7200
        tokens.add(ctx.response["token"])
    assert len(tokens) == 5
    assert len(store.sessions) == 5


def test_issue_session_needs_a_session() -> None:
    err = error_of(IssueSession(IssueSessionOptions()), make_context())
    assert type(err) is Unauthorized


def test_issued_token_passes_check_session() -> None:
    store = storage()
    run(store.rotate_session_key(TEST_APPID, OPENID, None, KEY_NEW))
    issuing = make_context(storage=store, session=make_session(OPENID, KEY_NEW))
    run(IssueSession(IssueSessionOptions())(issuing))
    checking = make_context(storage=store, token=issuing.response["token"])
    run(CheckSession(CheckSessionOptions())(checking))
    assert checking.session is not None
    assert checking.session.openid == OPENID
    assert checking.session.session_key.reveal() == KEY_NEW


# --- check_session ----------------------------------------------------------------------------


def login_session(token: str, appid: str = TEST_APPID, ttl: float = 600, openid: str = OPENID) -> LoginSession:
    now = time.time()
    return LoginSession(
        token_hash=hashlib.sha256(token.encode()).hexdigest(),
        appid=appid,
        openid=openid,
        unionid="u-login",
        created_at=now - 10,
        expires_at=now + ttl,
    )


def check(token: str | None, store: MemoryStorage) -> Context:
    ctx = make_context(storage=store, token=token)
    run(CheckSession(CheckSessionOptions())(ctx))
    return ctx


def test_check_session_without_token() -> None:
    err = error_of(CheckSession(CheckSessionOptions()), make_context())
    assert type(err) is Unauthorized
    assert err.status == 401
    assert err.code == "session_required"


def test_check_session_unknown_token() -> None:
    store = storage()
    run(store.put_login_session(login_session("known")))
    err = error_of(CheckSession(CheckSessionOptions()), make_context(storage=store, token="unknown"))
    assert type(err) is SessionInvalid


def test_check_session_expired() -> None:
    store = storage()
    run(store.rotate_session_key(TEST_APPID, OPENID, None, KEY_NEW))
    run(store.put_login_session(login_session("old-token", ttl=-1)))
    ctx = make_context(storage=store, token="old-token")
    err = error_of(CheckSession(CheckSessionOptions()), ctx)
    assert type(err) is SessionExpired
    assert err.code == "session_expired"
    assert ctx.session is None


def test_check_session_token_of_another_app() -> None:
    store = storage()
    run(store.rotate_session_key("wxOTHERAPP0000", OPENID, None, KEY_NEW))
    run(store.put_login_session(login_session("their-token", appid="wxOTHERAPP0000")))
    ctx = make_context(storage=store, token="their-token")
    err = error_of(CheckSession(CheckSessionOptions()), ctx)
    assert type(err) is SessionInvalid
    assert ctx.session is None


def test_check_session_without_stored_keys() -> None:
    store = storage()
    run(store.put_login_session(login_session("tok")))
    err = error_of(CheckSession(CheckSessionOptions()), make_context(storage=store, token="tok"))
    assert type(err) is SessionInvalid


def test_check_session_sets_current_and_previous_keys() -> None:
    store = storage()
    run(store.rotate_session_key(TEST_APPID, OPENID, "u-keys", KEY_OLD))
    run(store.rotate_session_key(TEST_APPID, OPENID, None, KEY_NEW))
    run(store.put_login_session(login_session("good")))
    ctx = check("good", store)
    assert ctx.session is not None
    assert ctx.session.openid == OPENID
    assert ctx.session.unionid == "u-keys"
    assert ctx.session.session_key.reveal() == KEY_NEW
    assert ctx.session.previous_session_key is not None
    assert ctx.session.previous_session_key.reveal() == KEY_OLD
    assert ctx.wechat.calls == {}  # remote: false by default


def test_check_session_without_previous_key_and_login_unionid() -> None:
    store = storage()
    run(store.rotate_session_key(TEST_APPID, OPENID, None, KEY_NEW))
    run(store.put_login_session(login_session("good")))
    ctx = check("good", store)
    assert ctx.session is not None
    assert ctx.session.previous_session_key is None
    assert ctx.session.unionid == "u-login"


# --- decrypt ----------------------------------------------------------------------------------


def decrypt_ctx(fields: dict[str, str], current: str = KEY_NEW, previous: str | None = None) -> Context:
    return make_context(fields, session=make_session(OPENID, current, previous))


def test_decrypt_phone() -> None:
    payload = phone_payload()
    ctx = decrypt_ctx(encrypt(payload, KEY_NEW), previous=KEY_OLD)
    run(Decrypt(DecryptOptions(kind="phone"))(ctx))
    assert ctx.data == payload
    assert ctx.outcome.used_previous_session_key is False


def test_decrypt_repairs_query_string_damage() -> None:
    payload = phone_payload()
    fields = encrypt(payload, KEY_NEW, iv=b"\xfb\xef\xbe" * 5 + b"x")
    data, iv = fields["encryptedData"], fields["iv"]
    assert "+" in iv[1:]
    damaged = {
        # wrapped lines, and '+' turned into ' '
        "encryptedData": "\r\n".join(data[i : i + 20] for i in range(0, len(data), 20)) + "\n",
        "iv": iv[0] + iv[1:].replace("+", " "),
    }
    ctx = decrypt_ctx(damaged)
    run(Decrypt(DecryptOptions(kind="phone"))(ctx))
    assert ctx.data == payload


@pytest.mark.parametrize(("missing", "present"), [("encryptedData", "iv"), ("iv", "encryptedData")])
def test_decrypt_missing_field(missing: str, present: str) -> None:
    fields = encrypt(phone_payload(), KEY_NEW)
    ctx = decrypt_ctx({present: fields[present]})
    err = error_of(Decrypt(DecryptOptions(kind="phone")), ctx)
    assert type(err) is MissingField
    assert missing in err.client_message
    assert ctx.data == {}


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"encryptedData": "%%%not-base64%%%", "iv": base64.b64encode(IV).decode()}, "encryptedData"),
        ({"encryptedData": base64.b64encode(bytes(20)).decode(), "iv": base64.b64encode(IV).decode()}, "16"),
        ({"encryptedData": base64.b64encode(bytes(32)).decode(), "iv": base64.b64encode(bytes(12)).decode()}, "iv"),
    ],
)
def test_decrypt_malformed(fields: dict[str, str], fragment: str) -> None:
    err = error_of(Decrypt(DecryptOptions(kind="phone")), decrypt_ctx(fields))
    assert type(err) is InvalidEncryptedData
    assert err.status == 400
    assert fragment in err.client_message


def test_decrypt_wrong_key() -> None:
    ctx = decrypt_ctx(encrypt(phone_payload(), KEY_OTHER), previous=KEY_OLD)
    err = error_of(Decrypt(DecryptOptions(kind="phone")), ctx)
    assert type(err) is DecryptFailed
    assert err.code == "decrypt_failed"
    assert ctx.data == {}
    assert ctx.outcome.used_previous_session_key is False


def test_decrypt_falls_back_to_previous_key() -> None:
    payload = phone_payload()
    ctx = decrypt_ctx(encrypt(payload, KEY_OLD), current=KEY_NEW, previous=KEY_OLD)
    run(Decrypt(DecryptOptions(kind="phone"))(ctx))
    assert ctx.data == payload
    assert ctx.outcome.used_previous_session_key is True


def test_decrypt_without_previous_key_fails() -> None:
    ctx = decrypt_ctx(encrypt(phone_payload(), KEY_OLD), current=KEY_NEW, previous=None)
    assert type(error_of(Decrypt(DecryptOptions(kind="phone")), ctx)) is DecryptFailed


def test_decrypt_try_previous_key_false_disables_fallback() -> None:
    ctx = decrypt_ctx(encrypt(phone_payload(), KEY_OLD), current=KEY_NEW, previous=KEY_OLD)
    err = error_of(Decrypt(DecryptOptions(kind="phone", try_previous_key=False)), ctx)
    assert type(err) is DecryptFailed
    assert ctx.outcome.used_previous_session_key is False


def test_decrypt_needs_a_session() -> None:
    ctx = make_context(encrypt(phone_payload(), KEY_NEW))
    assert type(error_of(Decrypt(DecryptOptions()), ctx)) is Unauthorized


def test_decrypt_kind_mismatch() -> None:
    ctx = decrypt_ctx(encrypt(userinfo_payload(), KEY_NEW))
    err = error_of(Decrypt(DecryptOptions(kind="phone")), ctx)
    assert type(err) is UnexpectedPayload
    assert "not phone data" in err.client_message
    assert "phoneNumber" in err.client_message
    assert ctx.data == {}


def test_decrypt_kind_requires_string_values() -> None:
    payload = phone_payload()
    payload["countryCode"] = 86
    err = error_of(Decrypt(DecryptOptions(kind="phone")), decrypt_ctx(encrypt(payload, KEY_NEW)))
    assert type(err) is UnexpectedPayload
    assert "countryCode" in err.client_message


def test_decrypt_kind_any_accepts_any_object() -> None:
    ctx = decrypt_ctx(encrypt({"stepInfoList": [{"step": 1}]}, KEY_NEW))
    run(Decrypt(DecryptOptions())(ctx))
    assert ctx.data == {"stepInfoList": [{"step": 1}]}


def test_decrypt_userinfo_of_this_user() -> None:
    payload = userinfo_payload(OPENID)
    ctx = decrypt_ctx(encrypt(payload, KEY_NEW))
    run(Decrypt(DecryptOptions(kind="userinfo"))(ctx))
    assert ctx.data == payload


def test_decrypt_userinfo_of_another_user() -> None:
    ctx = decrypt_ctx(encrypt(userinfo_payload("o-mallory"), KEY_NEW))
    err = error_of(Decrypt(DecryptOptions(kind="userinfo")), ctx)
    assert type(err) is UnexpectedPayload
    assert "another user" in err.client_message
    assert ctx.data == {}


# --- watermark --------------------------------------------------------------------------------


def watermark_ctx(mark: Any, app_id: str = TEST_APPID) -> Context:
    data: dict[str, Any] = {"phoneNumber": "13800001111"}
    if mark is not None:
        data["watermark"] = mark
    return make_context(data=data, app=make_app_config(appid=app_id))


def test_watermark_fresh_and_right_app() -> None:
    ctx = watermark_ctx({"appid": TEST_APPID, "timestamp": int(time.time()) - 5})
    run(Watermark(WatermarkOptions(max_age=600))(ctx))
    assert ctx.data["phoneNumber"] == "13800001111"


def test_watermark_wrong_appid() -> None:
    ctx = watermark_ctx({"appid": "wxSOMEONEELSE", "timestamp": int(time.time())})
    err = error_of(Watermark(WatermarkOptions()), ctx)
    assert type(err) is WatermarkMismatch
    assert err.status == 422


def test_watermark_max_age_exceeded() -> None:
    ctx = watermark_ctx({"appid": TEST_APPID, "timestamp": int(time.time()) - 700})
    err = error_of(Watermark(WatermarkOptions(max_age=600)), ctx)
    assert type(err) is WatermarkExpired
    assert "600s" in err.client_message


def test_watermark_old_but_no_max_age() -> None:
    ctx = watermark_ctx({"appid": TEST_APPID, "timestamp": int(time.time()) - 86400 * 365})
    run(Watermark(WatermarkOptions())(ctx))


def test_watermark_future_beyond_max_skew() -> None:
    ctx = watermark_ctx({"appid": TEST_APPID, "timestamp": int(time.time()) + 120})
    err = error_of(Watermark(WatermarkOptions(max_skew=60)), ctx)
    assert type(err) is WatermarkExpired


def test_watermark_future_within_max_skew() -> None:
    ctx = watermark_ctx({"appid": TEST_APPID, "timestamp": int(time.time()) + 120})
    run(Watermark(WatermarkOptions(max_skew=300, max_age=600))(ctx))


@pytest.mark.parametrize("mark", [None, "wx0000000000test0", ["appid"]])
def test_watermark_missing(mark: Any) -> None:
    err = error_of(Watermark(WatermarkOptions()), watermark_ctx(mark))
    assert type(err) is UnexpectedPayload
    assert "no watermark" in err.client_message


@pytest.mark.parametrize("stamp", [None, "1700000000", True])
def test_watermark_without_numeric_timestamp(stamp: Any) -> None:
    mark: dict[str, Any] = {"appid": TEST_APPID}
    if stamp is not None:
        mark["timestamp"] = stamp
    err = error_of(Watermark(WatermarkOptions()), watermark_ctx(mark))
    assert type(err) is UnexpectedPayload
    assert "timestamp" in err.client_message


# --- mask_guard -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        {"phoneNumber": "138****6666", "purePhoneNumber": "13800006666"},
        {"phoneNumber": "13800006666", "purePhoneNumber": "138****6666"},
    ],
)
def test_mask_guard_refuses_masked_numbers(data: dict[str, str]) -> None:
    err = error_of(MaskGuard(MaskGuardOptions()), make_context(data=data))
    assert type(err) is PhoneMasked
    assert "1.9.1" in err.client_hint


def test_mask_guard_passes_full_numbers() -> None:
    ctx = make_context(data={"phoneNumber": "+8613800006666", "purePhoneNumber": "13800006666", "note": "*"})
    run(MaskGuard(MaskGuardOptions())(ctx))


def test_mask_guard_checks_configured_fields_only() -> None:
    data = {"phoneNumber": "138****6666", "mobile": "139****0000"}
    run(MaskGuard(MaskGuardOptions(fields=["other"]))(make_context(data=data)))
    err = error_of(MaskGuard(MaskGuardOptions(fields=["mobile"])), make_context(data=data))
    assert type(err) is PhoneMasked


# --- verify_signature -------------------------------------------------------------------------

RAW = '{"nickName":"小明","gender":1}'


def signed(raw: str, key: str) -> dict[str, str]:
    return {"rawData": raw, "signature": hashlib.sha1((raw + key).encode("utf-8")).hexdigest()}


def test_verify_signature_optional_and_absent() -> None:
    ctx = make_context(session=make_session(OPENID, KEY_NEW))
    run(VerifySignature(VerifySignatureOptions())(ctx))


def test_verify_signature_required_and_absent() -> None:
    ctx = make_context(session=make_session(OPENID, KEY_NEW))
    err = error_of(VerifySignature(VerifySignatureOptions(required=True)), ctx)
    assert type(err) is MissingField
    assert "rawData and signature" in err.client_message


@pytest.mark.parametrize("field", ["rawData", "signature"])
def test_verify_signature_half_present(field: str) -> None:
    ctx = make_context({field: signed(RAW, KEY_NEW)[field]}, session=make_session(OPENID, KEY_NEW))
    assert type(error_of(VerifySignature(VerifySignatureOptions()), ctx)) is MissingField


def test_verify_signature_good() -> None:
    ctx = make_context(signed(RAW, KEY_NEW), session=make_session(OPENID, KEY_NEW, KEY_OLD))
    run(VerifySignature(VerifySignatureOptions(required=True))(ctx))


def test_verify_signature_uppercase_hex_accepted() -> None:
    fields = signed(RAW, KEY_NEW)
    fields["signature"] = fields["signature"].upper()
    run(VerifySignature(VerifySignatureOptions())(make_context(fields, session=make_session(OPENID, KEY_NEW))))


@pytest.mark.parametrize(
    "fields",
    [
        signed(RAW, KEY_OTHER),
        signed(RAW + " ", KEY_NEW) | {"rawData": RAW},
        {"rawData": RAW, "signature": ""},
        {"rawData": RAW, "signature": "0" * 40},
    ],
)
def test_verify_signature_mismatch(fields: dict[str, str]) -> None:
    ctx = make_context(fields, session=make_session(OPENID, KEY_NEW, KEY_OLD))
    err = error_of(VerifySignature(VerifySignatureOptions()), ctx)
    assert type(err) is SignatureMismatch
    assert err.code == "signature_mismatch"


def test_verify_signature_previous_key_accepted() -> None:
    ctx = make_context(signed(RAW, KEY_OLD), session=make_session(OPENID, KEY_NEW, KEY_OLD))
    run(VerifySignature(VerifySignatureOptions())(ctx))


def test_verify_signature_previous_key_only_if_known() -> None:
    ctx = make_context(signed(RAW, KEY_OLD), session=make_session(OPENID, KEY_NEW))
    assert type(error_of(VerifySignature(VerifySignatureOptions()), ctx)) is SignatureMismatch


# --- respond ----------------------------------------------------------------------------------

DATA = {
    "phoneNumber": "+8613800001111",
    "purePhoneNumber": "13800001111",
    "countryCode": "86",
    "watermark": {"appid": TEST_APPID, "timestamp": 1},
}


def test_respond_copies_data_without_watermark() -> None:
    ctx = make_context(data=DATA)
    ctx.response["token"] = "kept"
    run(Respond(RespondOptions())(ctx))
    assert ctx.response == {
        "token": "kept",
        "phoneNumber": "+8613800001111",
        "purePhoneNumber": "13800001111",
        "countryCode": "86",
    }
    assert ctx.data == DATA  # the data itself is untouched


def test_respond_fields() -> None:
    ctx = make_context(data=DATA)
    run(Respond(RespondOptions(fields=["purePhoneNumber", "missing", "watermark"]))(ctx))
    assert ctx.response == {"purePhoneNumber": "13800001111"}


def test_respond_exclude() -> None:
    ctx = make_context(data=DATA)
    run(Respond(RespondOptions(exclude=["countryCode"]))(ctx))
    assert set(ctx.response) == {"phoneNumber", "purePhoneNumber", "watermark"}


def test_respond_fields_and_exclude() -> None:
    ctx = make_context(data=DATA)
    run(Respond(RespondOptions(fields=["phoneNumber", "countryCode"], exclude=["countryCode"]))(ctx))
    assert ctx.response == {"phoneNumber": "+8613800001111"}


# --- memory storage: session keys -------------------------------------------------------------


def test_rotate_first_key_has_no_previous() -> None:
    store = storage()
    keys = run(store.rotate_session_key(TEST_APPID, OPENID, "u1", KEY_OLD))
    assert (keys.appid, keys.openid, keys.unionid) == (TEST_APPID, OPENID, "u1")
    assert (keys.session_key, keys.previous_session_key) == (KEY_OLD, None)
    assert run(store.get_session_keys(TEST_APPID, OPENID)) == keys


def test_rotate_new_key_moves_current_to_previous() -> None:
    store = storage()
    run(store.rotate_session_key(TEST_APPID, OPENID, None, KEY_OLD))
    keys = run(store.rotate_session_key(TEST_APPID, OPENID, None, KEY_NEW))
    assert (keys.session_key, keys.previous_session_key) == (KEY_NEW, KEY_OLD)
    third = run(store.rotate_session_key(TEST_APPID, OPENID, None, KEY_OTHER))
    assert (third.session_key, third.previous_session_key) == (KEY_OTHER, KEY_NEW)


def test_rotate_same_key_keeps_previous() -> None:
    store = storage()
    run(store.rotate_session_key(TEST_APPID, OPENID, None, KEY_OLD))
    run(store.rotate_session_key(TEST_APPID, OPENID, None, KEY_NEW))
    again = run(store.rotate_session_key(TEST_APPID, OPENID, None, KEY_NEW))
    assert (again.session_key, again.previous_session_key) == (KEY_NEW, KEY_OLD)
    first_only = storage()
    run(first_only.rotate_session_key(TEST_APPID, OPENID, None, KEY_OLD))
    same = run(first_only.rotate_session_key(TEST_APPID, OPENID, None, KEY_OLD))
    assert (same.session_key, same.previous_session_key) == (KEY_OLD, None)


def test_rotate_keeps_unionid_and_separates_apps_and_users() -> None:
    store = storage()
    run(store.rotate_session_key(TEST_APPID, OPENID, "u1", KEY_OLD))
    keys = run(store.rotate_session_key(TEST_APPID, OPENID, None, KEY_NEW))
    assert keys.unionid == "u1"
    other_app = run(store.rotate_session_key("wxOTHERAPP0000", OPENID, None, KEY_OTHER))
    assert other_app.previous_session_key is None
    other_user = run(store.rotate_session_key(TEST_APPID, "o-bob", None, KEY_OTHER))
    assert other_user.previous_session_key is None
    mine = run(store.get_session_keys(TEST_APPID, OPENID))
    assert mine is not None
    assert (mine.session_key, mine.previous_session_key) == (KEY_NEW, KEY_OLD)
    assert run(store.get_session_keys(TEST_APPID, "o-nobody")) is None


def test_login_sessions_round_trip_and_sweep() -> None:
    store = MemoryStorage(MemoryOptions(max_sessions=2))
    for name in ("a", "b", "c"):
        run(store.put_login_session(login_session(name)))
    assert len(store.sessions) == 2
    assert run(store.get_login_session(hashlib.sha256(b"a").hexdigest())) is None
    kept = run(store.get_login_session(hashlib.sha256(b"c").hexdigest()))
    assert kept is not None
    assert kept.openid == OPENID
