"""gateway.wechat.crypto: AES-128-CBC open data, strict shapes, one error for key failures, signatures."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import pytest
from Crypto.Cipher import AES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.wechat import crypto
from gateway.wechat.crypto import DecryptionFailed, MalformedInput

KEY = bytes(range(16))
KEY_B64 = base64.b64encode(KEY).decode()  # AAECAwQFBgcICQoLDA0ODw==
OTHER_KEY_B64 = base64.b64encode(bytes(range(100, 116))).decode()
IV = bytes(range(16, 32))
IV_B64 = base64.b64encode(IV).decode()

# WeChat's own published sample (WXBizDataCrypt, every official language): user info.
SAMPLE_APPID = "wx4f4bc4dec97d474b"
SAMPLE_SESSION_KEY = "tiihtNczf5v6AKRyjwEUhQ=="
SAMPLE_IV = "r7BXXKkLb8qrSNn05n0qiA=="
SAMPLE_DATA = (
    "CiyLU1Aw2KjvrjMdj8YKliAjtP4gsMZMQmRzooG2xrDcvSnxIMXFufNstNGTyaGS9uT5geRa0W4oTOb1WT7fJlAC+oNPdbB+"
    "3hVbJSRgv+4lGOETKUQz6OYStslQ142dNCuabNPGBzlooOmB231qMM85d2/fV6ChevvXvQP8Hkue1poOFtnEtpyxVLW1zAo6"
    "/1Xx1COxFvrc2d7UL/lmHInNlxuacJXwu0fjpXfz/YqYzBIBzD6WUfTIF9GRHpOn/Hz7saL8xz+W//FRAUid1OksQaQx4CMs"
    "8LOddcQhULW4ucetDf96JcR3g0gfRK4PC7E/r7Z6xNrXd2UIeorGj5Ef7b1pJAYB6Y5anaHqZ9J6nKEBvB4DnNLIVWSgARns"
    "/8wR2SiRS7MNACwTyrGvt9ts8p12PKFdlqYTopNHR1Vf7XjfhQlVsAJdNiKdYmYVoKlaRv85IfVunYzO0IKXsyl7JCUjCpoG"
    "20f0a04COwfneQAGGwd5oa+T8yO5hzuyDb/XcxxmK01EpqOyuxINew=="
)


def pkcs7(data: bytes) -> bytes:
    n = 16 - len(data) % 16
    return data + bytes([n]) * n


def aes_encrypt(plain: bytes, key: bytes = KEY, iv: bytes = IV, padded: bool = False) -> str:
    """Independent of the module under test: raw AES-CBC with our own PKCS#7."""
    body = plain if padded else pkcs7(plain)
    return base64.b64encode(AES.new(key, AES.MODE_CBC, iv).encrypt(body)).decode()


def aes_decrypt(data_b64: str, key: bytes, iv: bytes) -> bytes:
    plain = AES.new(key, AES.MODE_CBC, iv).decrypt(base64.b64decode(data_b64))
    n = plain[-1]
    assert 1 <= n <= 16
    assert plain[-n:] == bytes([n]) * n
    return plain[:-n]


# --- known vectors and round trips ---------------------------------------------------------


def test_decrypts_wechats_published_sample() -> None:
    payload = crypto.decrypt_json(SAMPLE_SESSION_KEY, SAMPLE_IV, SAMPLE_DATA)
    assert payload["openId"] == "oGZUI0egBJY1zhBYw2KhdUfwVJJE"
    assert payload["nickName"] == "Band"
    assert payload["unionId"] == "ocMvos6NjeKLIBqg5Mr9QjxrP1FA"
    assert payload["watermark"] == {"timestamp": 1477314187, "appid": SAMPLE_APPID}


def test_decrypts_vector_built_with_raw_aes() -> None:
    payload = {"phoneNumber": "+8613800001111", "countryCode": "86", "watermark": {"appid": "wxA", "timestamp": 7}}
    data = aes_encrypt(json.dumps(payload).encode())
    assert crypto.decrypt_json(KEY_B64, IV_B64, data) == payload


def test_decrypt_bytes_returns_exact_plaintext_of_block_multiple() -> None:
    # 32 bytes of plaintext get a full block of padding (16 x 0x10), which must be removed.
    plain = b'{"k":"0123456789abcdefghijklm"} '
    assert len(plain) == 32
    data = aes_encrypt(plain)
    assert len(base64.b64decode(data)) == 48
    assert crypto.decrypt_bytes(KEY_B64, IV_B64, data) == plain


@pytest.mark.parametrize(
    "payload",
    [
        {"nickName": "小明", "city": "广州"},
        {"emoji": "🐼🎉", "mixed": "Zoë \u2013 ½ ✓", "nested": {"list": [1, 2.5, None, True]}},
        {"empty": ""},
        {"long": "長" * 1000},
    ],
)
def test_round_trip_unicode(payload: dict[str, Any]) -> None:
    data, iv = crypto.encrypt_json(KEY_B64, payload)
    assert crypto.decrypt_json(KEY_B64, iv, data) == payload
    # and the ciphertext is what raw AES-CBC + PKCS#7 gives back
    assert json.loads(aes_decrypt(data, KEY, base64.b64decode(iv)).decode("utf-8")) == payload


# No deadline (hypothesis' default, 200 ms per example, fails a loaded CI machine at random) and
# no example database (it would write .hypothesis/ into the work tree).
@settings(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    key=st.binary(min_size=16, max_size=16),
    iv=st.binary(min_size=16, max_size=16),
    cipher_text=st.integers(min_value=1, max_value=40).flatmap(lambda n: st.binary(min_size=16 * n, max_size=16 * n)),
)
def test_cbc_over_the_cached_block_cipher_equals_pycryptodome_cbc(key: bytes, iv: bytes, cipher_text: bytes) -> None:
    expected = AES.new(key, AES.MODE_CBC, iv).decrypt(cipher_text)
    assert crypto.cbc_decrypt(key, iv, cipher_text) == expected
    # the cached cipher keeps no state between payloads: the same call gives the same answer
    assert crypto.cbc_decrypt(key, iv, cipher_text) == expected


def test_encrypt_json_with_fixed_iv_uses_it() -> None:
    data, iv = crypto.encrypt_json(KEY_B64, {"a": "b"}, iv=IV)
    assert iv == IV_B64
    assert json.loads(aes_decrypt(data, KEY, IV)) == {"a": "b"}


def test_encrypt_json_random_ivs_differ() -> None:
    first = crypto.encrypt_json(KEY_B64, {"a": "b"})
    second = crypto.encrypt_json(KEY_B64, {"a": "b"})
    assert first[1] != second[1]
    assert first[0] != second[0]
    assert len(base64.b64decode(first[1])) == 16


def test_new_session_key_is_16_random_bytes() -> None:
    keys = {crypto.new_session_key() for _ in range(20)}
    assert len(keys) == 20
    for key in keys:
        assert len(key) == 24
        assert len(base64.b64decode(key, validate=True)) == 16


# --- shape errors: precise MalformedInput ---------------------------------------------------


@pytest.mark.parametrize(
    ("session_key", "iv", "data", "fragment"),
    [
        (KEY_B64, IV_B64, "not base64!!", "encryptedData is not valid base64"),
        (KEY_B64, IV_B64, "QUJD", "encryptedData must decode to a non-empty multiple of 16 bytes"),  # 3 bytes
        (KEY_B64, IV_B64, "", "encryptedData must decode to a non-empty multiple of 16 bytes"),
        (KEY_B64, IV_B64, base64.b64encode(bytes(17)).decode(), "non-empty multiple of 16"),
        (KEY_B64, IV_B64, base64.b64encode(bytes(31)).decode(), "non-empty multiple of 16"),
        (KEY_B64, "r7BXXKkLb8qrSNn05n0qiA", "QUJD", "iv is not valid base64"),  # padding cut off
        (KEY_B64, "#7BXXKkLb8qrSNn05n0qiA==", "QUJD", "iv is not valid base64"),
        (KEY_B64, base64.b64encode(bytes(8)).decode(), aes_encrypt(b"{}"), "iv must decode to 16 bytes"),
        (KEY_B64, base64.b64encode(bytes(24)).decode(), aes_encrypt(b"{}"), "iv must decode to 16 bytes"),
        (KEY_B64, "", aes_encrypt(b"{}"), "iv must decode to 16 bytes"),
        ("tiihtNczf5v6AKRyjwEUhQ", IV_B64, aes_encrypt(b"{}"), "session_key is not valid base64"),
        ("tiih tNczf5v6AKRyjwEUhQ==", IV_B64, aes_encrypt(b"{}"), "session_key is not valid base64"),
        (base64.b64encode(bytes(24)).decode(), IV_B64, aes_encrypt(b"{}"), "session_key must decode to 16 bytes"),
        (base64.b64encode(bytes(15)).decode(), IV_B64, aes_encrypt(b"{}"), "session_key must decode to 16 bytes"),
    ],
)
def test_shape_errors_are_malformed_input(session_key: str, iv: str, data: str, fragment: str) -> None:
    with pytest.raises(MalformedInput) as exc_info:
        crypto.decrypt_json(session_key, iv, data)
    assert exc_info.type is MalformedInput
    assert fragment in str(exc_info.value)


def test_shape_errors_are_not_decryption_failures() -> None:
    assert not issubclass(MalformedInput, DecryptionFailed)
    assert not issubclass(DecryptionFailed, MalformedInput)


def test_malformed_key_is_reported_before_data() -> None:
    # Both are bad; the key is checked first, whatever the data.
    with pytest.raises(MalformedInput, match="session_key"):
        crypto.decrypt_bytes("short", IV_B64, "also bad!")


def test_encrypt_refuses_malformed_key() -> None:
    with pytest.raises(MalformedInput, match="session_key must decode to 16 bytes"):
        crypto.encrypt_json(base64.b64encode(bytes(32)).decode(), {"a": 1})


# --- key-dependent failures: one DecryptionFailed, one message -----------------------------


def _corrupt_last_block(data_b64: str) -> str:
    raw = bytearray(base64.b64decode(data_b64))
    for i in range(len(raw) - 16, len(raw)):
        raw[i] ^= 0xA5
    return base64.b64encode(bytes(raw)).decode()


def _zero_padding_byte(data_b64: str) -> str:
    # Flipping byte -17 (previous block) flips the last plaintext byte: padding becomes 0x00.
    raw = bytearray(base64.b64decode(data_b64))
    plain_last = pkcs7(GOOD_PLAIN)[-1]
    raw[-17] ^= plain_last
    return base64.b64encode(bytes(raw)).decode()


GOOD_PLAIN = json.dumps({"phoneNumber": "13800001111", "watermark": {"appid": "wxA", "timestamp": 1}}).encode()
GOOD_DATA = aes_encrypt(GOOD_PLAIN)

KEY_DEPENDENT_FAILURES = {
    "wrong key": (OTHER_KEY_B64, GOOD_DATA),
    "corrupted last block": (KEY_B64, _corrupt_last_block(GOOD_DATA)),
    "padding byte zero": (KEY_B64, _zero_padding_byte(GOOD_DATA)),
    "valid padding, not UTF-8": (KEY_B64, aes_encrypt(b"\xff\xfe\xfd{not utf8}\xc3\x28")),
    "valid UTF-8, not JSON": (KEY_B64, aes_encrypt("电话 13800001111".encode())),
    "JSON array": (KEY_B64, aes_encrypt(b'[{"phoneNumber": "13800001111"}]')),
    "JSON string": (KEY_B64, aes_encrypt(b'"just a string"')),
    "JSON number": (KEY_B64, aes_encrypt(b"42")),
    "JSON null": (KEY_B64, aes_encrypt(b"null")),
    "empty plaintext": (KEY_B64, aes_encrypt(b"")),
}


def test_good_data_decrypts_with_right_key() -> None:
    # The failure vectors below are all derived from this one: it must itself be fine.
    assert crypto.decrypt_json(KEY_B64, IV_B64, GOOD_DATA)["phoneNumber"] == "13800001111"


@pytest.mark.parametrize("case", sorted(KEY_DEPENDENT_FAILURES))
def test_key_dependent_failures_raise_exactly_decryption_failed(case: str) -> None:
    session_key, data = KEY_DEPENDENT_FAILURES[case]
    with pytest.raises(DecryptionFailed) as exc_info:
        crypto.decrypt_json(session_key, IV_B64, data)
    assert exc_info.type is DecryptionFailed
    assert str(exc_info.value) == "decryption failed"
    # nothing chained that a careless handler could print
    assert exc_info.value.__cause__ is None
    assert exc_info.value.__suppress_context__ or exc_info.value.__context__ is None


def test_all_key_dependent_failures_look_identical() -> None:
    seen = set()
    for session_key, data in KEY_DEPENDENT_FAILURES.values():
        try:
            crypto.decrypt_json(session_key, IV_B64, data)
        except DecryptionFailed as exc:
            seen.add((type(exc), str(exc), exc.args))
        else:
            pytest.fail("decryption unexpectedly succeeded")
    assert len(seen) == 1


def test_bad_padding_fails_already_in_decrypt_bytes() -> None:
    with pytest.raises(DecryptionFailed):
        crypto.decrypt_bytes(KEY_B64, IV_B64, _zero_padding_byte(GOOD_DATA))


def test_padding_is_checked_strictly() -> None:
    # The last byte says 4 bytes of padding but the three before it are not 0x04: a loose
    # unpadder (most SDKs) strips 4 bytes and carries on; a strict one refuses.
    content = b'{"a":"bcdefghijklmnopqrstu"}'
    assert len(content) == 28
    with pytest.raises(DecryptionFailed):
        crypto.decrypt_bytes(KEY_B64, IV_B64, aes_encrypt(content + b"\x01\x02\x03\x04", padded=True))
    # the same route with correct padding works
    assert crypto.decrypt_bytes(KEY_B64, IV_B64, aes_encrypt(content + b"\x04" * 4, padded=True)) == content


# --- base64 repair --------------------------------------------------------------------------


def test_repair_base64_turns_spaces_back_into_plus() -> None:
    assert crypto.repair_base64("ab c/d e==") == "ab+c/d+e=="


def test_repair_base64_strips_newlines_and_tabs() -> None:
    # (leading/trailing spaces are left out on purpose: in a query string they were '+')
    assert crypto.repair_base64("\r\n\tabcd\r\nefgh\n\tijkl==\n") == "abcdefghijkl=="
    assert crypto.repair_base64("ab\tcd\ref\ngh") == "abcdefgh"


def test_repair_base64_leaves_clean_input_alone() -> None:
    assert crypto.repair_base64(SAMPLE_DATA) == SAMPLE_DATA


def test_repaired_query_string_damage_decrypts() -> None:
    assert "+" in SAMPLE_DATA
    damaged = SAMPLE_DATA.replace("+", " ")
    wrapped = "\n".join(damaged[i : i + 64] for i in range(0, len(damaged), 64))
    with pytest.raises(MalformedInput):
        crypto.decrypt_json(SAMPLE_SESSION_KEY, SAMPLE_IV, wrapped)
    repaired = crypto.repair_base64(wrapped)
    assert repaired == SAMPLE_DATA
    assert crypto.decrypt_json(SAMPLE_SESSION_KEY, SAMPLE_IV, repaired)["nickName"] == "Band"


def test_repair_base64_restores_a_leading_plus() -> None:
    iv = base64.b64encode(b"\xfb" + bytes(15)).decode()
    assert iv.startswith("+")
    assert crypto.repair_base64(iv.replace("+", " ")) == iv


# --- signatures and hashes ------------------------------------------------------------------


def test_checksession_signature_uses_base64_text_as_hmac_key() -> None:
    session_key = SAMPLE_SESSION_KEY
    expected = hmac.new(session_key.encode("ascii"), b"", hashlib.sha256).hexdigest()
    assert crypto.checksession_signature(session_key) == expected
    # not the decoded bytes
    decoded = hmac.new(base64.b64decode(session_key), b"", hashlib.sha256).hexdigest()
    assert crypto.checksession_signature(session_key) != decoded
    assert len(expected) == 64


def test_checksession_signature_differs_per_key() -> None:
    assert crypto.checksession_signature(KEY_B64) != crypto.checksession_signature(OTHER_KEY_B64)


def test_rawdata_signature_known_vector() -> None:
    # Sample from a public Go SDK's README: signature == sha1(rawData + session_key).
    raw = (
        '{"nickName":"Band","gender":1,"language":"zh_CN","city":"Guangzhou","province":"Guangdong",'
        '"country":"CN","avatarUrl":"http://wx.qlogo.cn/mmopen/vi_32/1vZvI39NWFQ9XM4LtQpFrQJ1xlgZxx3w7bQxKARol'
        '6503Iuswjjn6nIGBiaycAjAtpujxyzYsrztuuICqIM5ibXQ/0"}'
    )
    assert crypto.rawdata_signature(raw, "HyVFkGl5F5OQWJZZaNzBBg==") == "75e81ceda165f4ffa64f4068af58c64b8f54b88c"


def test_rawdata_signature_is_sha1_of_raw_plus_key_in_utf8() -> None:
    raw = '{"nickName":"小明","city":"广州"}'
    expected = hashlib.sha1((raw + KEY_B64).encode("utf-8")).hexdigest()
    assert crypto.rawdata_signature(raw, KEY_B64) == expected
    assert crypto.rawdata_signature(raw, OTHER_KEY_B64) != expected


def test_constant_time_equal() -> None:
    assert crypto.constant_time_equal("abc", "abc")
    assert not crypto.constant_time_equal("abc", "abd")
    assert not crypto.constant_time_equal("abc", "abcd")
    assert crypto.constant_time_equal("電話", "電話")


def test_token_hash_is_stable_sha256_hex() -> None:
    token = "tok-123_ABC"
    assert crypto.token_hash(token) == hashlib.sha256(b"tok-123_ABC").hexdigest()
    assert crypto.token_hash(token) == crypto.token_hash("tok-123_ABC")
    assert crypto.token_hash("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert crypto.token_hash(token) != crypto.token_hash(token + "x")
    assert token not in crypto.token_hash(token)
