"""Secrets at rest: AES-256-GCM with a key ring, for storages.

A sealed value is ``v1.<kid>.<base64(nonce | tag | ciphertext)>``; ``kid`` names the key
(the first 8 hex digits of its SHA-256), so old keys still open old records while new
writes use the newest key. The record's id is authenticated as associated data: a
sealed value copied onto another record does not open.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Sequence

from Crypto.Cipher import AES

NONCE_BYTES = 12
TAG_BYTES = 16


class SealError(ValueError):
    """A sealed value is malformed, was tampered with, or its key is not in the ring."""


def key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:8]


def parse_key(text: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SealError("an encryption key must be base64") from None
    if len(key) != 32:
        raise SealError("an encryption key must decode to 32 bytes (openssl rand -base64 32)")
    return key


def new_key_text() -> str:
    return base64.b64encode(os.urandom(32)).decode()


class KeyRing:
    def __init__(self, active: bytes, older: Sequence[bytes] = ()) -> None:
        self.active_id = key_id(active)
        self.keys = {key_id(k): k for k in [*older, active]}

    def seal(self, plain: str, record_id: str) -> str:
        nonce = os.urandom(NONCE_BYTES)
        cipher = AES.new(self.keys[self.active_id], AES.MODE_GCM, nonce=nonce)
        cipher.update(record_id.encode("utf-8"))
        text, tag = cipher.encrypt_and_digest(plain.encode("utf-8"))
        return f"v1.{self.active_id}.{base64.b64encode(nonce + tag + text).decode()}"

    def open(self, sealed: str, record_id: str) -> str:
        try:
            version, kid, blob = sealed.split(".", 2)
            raw = base64.b64decode(blob, validate=True)
        except (ValueError, binascii.Error):
            raise SealError("not a sealed value") from None
        key = self.keys.get(kid)
        if version != "v1" or key is None or len(raw) < NONCE_BYTES + TAG_BYTES:
            raise SealError(f"no key {kid!r} in the ring, or an unknown format")
        cipher = AES.new(key, AES.MODE_GCM, nonce=raw[:NONCE_BYTES])
        cipher.update(record_id.encode("utf-8"))
        try:
            plain = cipher.decrypt_and_verify(
                raw[NONCE_BYTES + TAG_BYTES :], raw[NONCE_BYTES : NONCE_BYTES + TAG_BYTES]
            )
        except ValueError:
            raise SealError("a sealed value failed authentication") from None
        return plain.decode("utf-8")

    def kid_of(self, sealed: str) -> str:
        return sealed.split(".", 2)[1] if sealed.count(".") >= 2 else ""


def keyed_hash(key: bytes, value: str) -> str:
    """A stable, keyed fingerprint (HMAC-SHA256), e.g. to look up a phone without storing it."""
    return hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()
