"""Open-data cryptography: AES-128-CBC/PKCS#7 decrypt, signatures, comparisons.

Input *shape* problems (not base64, wrong lengths) are reported precisely: they do
not depend on the key, so they reveal nothing. Every failure that does depend on the
key (padding, UTF-8, JSON) raises the same :class:`DecryptionFailed`, so the answer
is no padding oracle.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
import os
import re
import urllib.parse
from typing import Any

from Crypto.Cipher import AES
from Crypto.Util.Padding import pad, unpad

from gateway.jsoncodec import loads

KEY_BYTES = 16
IV_BYTES = 16
_WHITESPACE = re.compile(r"[\r\n\t]")


class MalformedInput(ValueError):
    """encryptedData, iv or the session key is not base64 of an acceptable length."""


class DecryptionFailed(ValueError):
    """The one error for every key-dependent decryption failure."""

    def __init__(self) -> None:
        super().__init__("decryption failed")


def repair_base64(value: str) -> str:
    """Undo transport damage: percent-encoding left over, '+' that became ' ' in a query
    string, wrapped lines.

    Base64 has no '%' and no spaces. A '%' means the value was percent-encoded once more
    than the transport decoded (a client's encodeURIComponent, then wx.request's own
    encoding of GET data): it is decoded, at most twice. Then every space was a '+',
    even a leading or trailing one."""
    for _ in range(2):
        if "%" not in value:
            break
        value = urllib.parse.unquote(value)
    return _WHITESPACE.sub("", value).replace(" ", "+")


def b64decode_strict(value: str, field: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedInput(f"{field} is not valid base64") from None


def decode_key(session_key: str) -> bytes:
    key = b64decode_strict(session_key, "session_key")
    if len(key) != KEY_BYTES:
        raise MalformedInput("session_key must decode to 16 bytes")
    return key


@functools.lru_cache(maxsize=1024)
def _block_cipher(key: bytes) -> Any:
    return AES.new(key, AES.MODE_ECB)


def cbc_decrypt(key: bytes, iv: bytes, cipher_text: bytes) -> bytes:
    """AES-CBC decryption, P[i] = D(C[i]) xor C[i-1] with C[-1] = iv, over a block cipher
    kept per key: a user's session key decrypts several payloads (phone, user info,
    retries), and setting up pycryptodome's CBC object with its key schedule costs twice
    the decryption itself (8.8 against 2.9 µs per payload, bench/RESULTS.md). Equal to
    ``AES.new(key, AES.MODE_CBC, iv).decrypt(cipher_text)``; a property test holds it
    to that. At most 1,024 recent keys' schedules stay in memory (SECURITY.md)."""
    blocks = _block_cipher(key).decrypt(cipher_text)
    chain = iv + cipher_text[: -AES.block_size]
    return (int.from_bytes(blocks, "big") ^ int.from_bytes(chain, "big")).to_bytes(len(cipher_text), "big")


def decrypt_bytes(session_key: str, iv: str, data: str) -> bytes:
    """Check shapes, then decrypt; raises MalformedInput or DecryptionFailed."""
    key = decode_key(session_key)
    iv_raw = b64decode_strict(iv, "iv")
    if len(iv_raw) != IV_BYTES:
        raise MalformedInput("iv must decode to 16 bytes")
    cipher_text = b64decode_strict(data, "encryptedData")
    if not cipher_text or len(cipher_text) % AES.block_size:
        raise MalformedInput("encryptedData must decode to a non-empty multiple of 16 bytes")
    plain = cbc_decrypt(key, iv_raw, cipher_text)
    try:
        return unpad(plain, AES.block_size, style="pkcs7")
    except ValueError:
        raise DecryptionFailed() from None


def decrypt_json(session_key: str, iv: str, data: str) -> dict[str, Any]:
    plain = decrypt_bytes(session_key, iv, data)
    try:
        obj = loads(plain, utf8_only=True)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise DecryptionFailed() from None
    if not isinstance(obj, dict):
        raise DecryptionFailed()
    return obj


def encrypt_json(session_key: str, payload: dict[str, Any], iv: bytes | None = None) -> tuple[str, str]:
    """Encrypt like WeChat does; returns (encryptedData, iv) as base64. For the sandbox and tests."""
    key = decode_key(session_key)
    iv_raw = iv if iv is not None else os.urandom(IV_BYTES)
    plain = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    cipher_text = AES.new(key, AES.MODE_CBC, iv_raw).encrypt(pad(plain, AES.block_size, style="pkcs7"))
    return base64.b64encode(cipher_text).decode(), base64.b64encode(iv_raw).decode()


def new_session_key() -> str:
    return base64.b64encode(os.urandom(KEY_BYTES)).decode()


def checksession_signature(session_key: str) -> str:
    # WeChat's documented example only reproduces with the base64 *text* as the HMAC key.
    return hmac.new(session_key.encode(), b"", hashlib.sha256).hexdigest()


def rawdata_signature(raw_data: str, session_key: str) -> str:
    # SHA-1 is WeChat's protocol here, not our choice.
    return hashlib.sha1((raw_data + session_key).encode("utf-8")).hexdigest()  # noqa: S324


def constant_time_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


def token_hash(token: str) -> str:
    """Login tokens are stored only as this hash."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()
