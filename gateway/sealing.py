"""Secrets and records at rest: AES-256-GCM seals and HMAC record MACs with a key ring, for storages.

A sealed value is ``v1.<kid>.<base64(nonce | tag | ciphertext)>``; ``kid`` names the key
(the first 8 hex digits of its SHA-256), so old keys still open old records while new
writes use the newest key. The record's id is authenticated as associated data: a
sealed value copied onto another record does not open.

A record MAC is ``m1.<kid>.<base64(HMAC-SHA256)>`` over the collection, the record's id
and its security-relevant fields. It proves that a gateway holding the storage key wrote
the record: whoever can only write to the database (a leaked MongoDB password, a local
process on the embedded server's port) cannot mint one. Its key is derived from the
storage key with a label (HKDF-Expand), so the AES key is never used as an HMAC key too.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

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


_MAC_KEY_LABEL = b"wxgate storage record MAC v1"


def _mac_key(key: bytes) -> bytes:
    # HKDF-Expand (RFC 5869) for one block; the Extract step is skipped because the storage
    # key is already 32 uniformly random bytes.
    return hmac.new(key, _MAC_KEY_LABEL + b"\x01", hashlib.sha256).digest()


def _mac_message(collection: str, record_id: str, fields: Mapping[str, Any]) -> bytes:
    # Canonical JSON: sorted keys, no spaces, floats as Python's shortest exact repr (MongoDB
    # keeps doubles exactly), so the same record always gives the same bytes; the collection
    # is part of it so that a session's MAC is worth nothing on an outbox record.
    return json.dumps(
        [collection, record_id, fields], sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


OPENED_MEMO_SIZE = 4096  # sealed values remembered (a few hundred bytes each)


class KeyRing:
    def __init__(self, active: bytes, older: Sequence[bytes] = ()) -> None:
        self.active_id = key_id(active)
        self.keys = {key_id(k): k for k in [*older, active]}
        self.mac_keys = {kid: _mac_key(k) for kid, k in self.keys.items()}
        # What open() gave for a sealed value: opening is a pure function of (value, record id),
        # and pycryptodome's AES-GCM costs about 0.4 ms a value here (a third of a /phone's
        # storage work), while the same sealed session key is read on every request of a user.
        # Not a cache of sessions or of anything that can be revoked: the records are still read
        # on every request, and a value that changes is a new entry. The plaintexts are what
        # this process could open at any moment with the keys it holds.
        self._opened: OrderedDict[tuple[str, str], str] = OrderedDict()

    def mac(self, collection: str, record_id: str, fields: Mapping[str, Any]) -> str:
        """The MAC of a record under the active key, to store in the record."""
        digest = hmac.new(
            self.mac_keys[self.active_id], _mac_message(collection, record_id, fields), hashlib.sha256
        ).digest()
        return f"m1.{self.active_id}.{base64.b64encode(digest).decode()}"

    def verify(self, tag: object, collection: str, record_id: str, fields: Mapping[str, Any]) -> None:
        """Raise :class:`SealError` unless ``tag`` is this record's MAC under a key of the ring."""
        if tag is None:
            raise SealError("the record has no MAC (written by an older wxgate, or not by a gateway)")
        if not isinstance(tag, str) or tag.count(".") != 2:
            raise SealError("the record's MAC is malformed")
        version, kid, encoded = tag.split(".")
        key = self.mac_keys.get(kid)
        if version != "m1" or key is None:
            raise SealError(f"the record's MAC names no key of the ring ({_shown(kid)}), or an unknown format")
        try:
            given = base64.b64decode(encoded, validate=True)
            message = _mac_message(collection, record_id, fields)
        except (binascii.Error, ValueError, TypeError):
            raise SealError("the record's MAC or fields are malformed") from None
        if not hmac.compare_digest(given, hmac.new(key, message, hashlib.sha256).digest()):
            raise SealError("the record's MAC does not match its fields")

    def seal(self, plain: str, record_id: str) -> str:
        nonce = os.urandom(NONCE_BYTES)
        cipher = AES.new(self.keys[self.active_id], AES.MODE_GCM, nonce=nonce)
        cipher.update(record_id.encode("utf-8"))
        text, tag = cipher.encrypt_and_digest(plain.encode("utf-8"))
        return f"v1.{self.active_id}.{base64.b64encode(nonce + tag + text).decode()}"

    def open(self, sealed: object, record_id: str) -> str:
        # object, not str: the value comes from a database record that anyone able to write
        # there may have replaced with a number or a document
        if not isinstance(sealed, str):
            raise SealError("not a sealed value")
        memo = (sealed, record_id)
        plain = self._opened.get(memo)
        if plain is not None:
            self._opened.move_to_end(memo)
            return plain
        plain = self._open(sealed, record_id)
        self._opened[memo] = plain
        if len(self._opened) > OPENED_MEMO_SIZE:
            self._opened.popitem(last=False)
        return plain

    def _open(self, sealed: str, record_id: str) -> str:
        try:
            version, kid, blob = sealed.split(".", 2)
            raw = base64.b64decode(blob, validate=True)
        except (ValueError, binascii.Error):
            raise SealError("not a sealed value") from None
        key = self.keys.get(kid)
        if version != "v1" or key is None or len(raw) < NONCE_BYTES + TAG_BYTES:
            raise SealError(f"no key {_shown(kid)} in the ring, or an unknown format")
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


def _shown(kid: str) -> str:
    # A key id comes from the record, which anyone with write access to the database may have
    # written: the message (logged) repeats it only when it has the shape of one.
    return repr(kid) if len(kid) == 8 and all(c in "0123456789abcdef" for c in kid) else "(not a key id)"


def keyed_hash(key: bytes, value: str) -> str:
    """A stable, keyed fingerprint (HMAC-SHA256), e.g. to look up a phone without storing it."""
    return hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()
