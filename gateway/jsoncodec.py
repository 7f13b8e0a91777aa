"""JSON in and out of the gateway: orjson first, the standard library's verdict for what
orjson refuses, so the answers never depend on which one ran."""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

# 19 digits in a row: a number orjson may not hold exactly (past 64 bits it returns a
# float, silently); such a text goes to the standard library, which keeps big integers.
LONG_NUMBER = re.compile(rb"[0-9]{19}")


def loads(body: bytes, *, utf8_only: bool = False) -> Any:
    """orjson is a tenth of the cost; what it refuses (lone surrogates, NaN) or may round
    (integers over 64 bits) gets the standard library's verdict, so answers do not change.
    ``utf8_only``: the standard library may not guess UTF-16 or UTF-32 from the bytes
    (decrypted open data is UTF-8 or not valid; a request body may be either)."""
    if LONG_NUMBER.search(body) is None:
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
    return json.loads(body.decode("utf-8") if utf8_only else body)


def dumps(payload: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON (no ASCII escaping), as every answer of the gateway is written."""
    try:
        return orjson.dumps(payload, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:  # e.g. an integer over 64 bits from a plugin step
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
