"""JSON in and out of the gateway: orjson first, the standard library's verdict for what
orjson refuses, so the answers never depend on which one ran."""

from __future__ import annotations

import json
from typing import Any

import orjson


def loads(body: bytes) -> Any:
    # orjson is a tenth of the cost; what it refuses (lone surrogates, integers over 64
    # bits, NaN) gets the standard library's verdict, so answers do not change.
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return json.loads(body)


def dumps(payload: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON (no ASCII escaping), as every answer of the gateway is written."""
    try:
        return orjson.dumps(payload, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:  # e.g. an integer over 64 bits from a plugin step
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
