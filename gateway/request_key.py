"""The one key that says what a request carried, for replay rejection and event ids.

Two requests that carry the same single-use thing get the same key, however the
transport mangled it on the way (percent-encoding, ``+`` turned into a space, wrapped
lines): the key is computed after every repair, from the decoded ciphertext bytes.
A request that carries nothing single-use (logout, session) is keyed by its request
id, so each one is its own event.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping

from gateway.wechat.crypto import repair_base64


def canonical_request_key(appid: str, fields: Mapping[str, str], request_id: str) -> str:
    """A hex SHA-256 naming what the request carried: encryptedData (as bytes), else the
    code, else the cloudID, else the request itself."""
    data = fields.get("encryptedData")
    if data:
        repaired = repair_base64(data)
        try:
            raw = base64.b64decode(repaired, validate=True)
        except (binascii.Error, ValueError):
            raw = repaired.encode("utf-8")  # not base64: decrypt refuses it; still a stable key
        return _digest(b"encryptedData", appid, raw)
    for name in ("code", "cloudID"):
        value = fields.get(name)
        if value:
            return _digest(name.encode(), appid, value.encode("utf-8"))
    return _digest(b"request", appid, request_id.encode("utf-8"))


def _digest(kind: bytes, appid: str, value: bytes) -> str:
    hasher = hashlib.sha256(kind)
    hasher.update(b"\0" + appid.encode("utf-8") + b"\0")
    hasher.update(value)
    return hasher.hexdigest()
