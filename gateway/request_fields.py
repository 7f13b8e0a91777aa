"""A flow request's fields and bearer token, read from the query, a form or a JSON body.

Fields are strings: the query first, then the body's (the body wins). Errors are the
gateway's own (``invalid_field``, ``invalid_json``), raised after the request id exists.
"""

from __future__ import annotations

import tornado.escape
import tornado.httputil

from gateway.errors import InvalidField, InvalidJSON, Unauthorized
from gateway.jsoncodec import loads

# Fields the built-in flows read: they must be strings when present.
STRING_FIELDS = frozenset({"code", "encryptedData", "iv", "rawData", "signature", "cloudID"})
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
MAX_QUERY_FIELDS = 1000  # Tornado's own guard against parsing costs, kept


def bearer_token(headers: tornado.httputil.HTTPHeaders) -> str | None:
    header = headers.get("Authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("The Authorization header must be 'Bearer <token>'.")
    return token


def parse_fields(query: str, body: bytes, headers: tornado.httputil.HTTPHeaders) -> dict[str, str]:
    """Query, then form or JSON body fields (the body wins); string values only."""
    fields: dict[str, str] = {}
    if query:
        try:
            parsed = tornado.escape.parse_qs_bytes(query, keep_blank_values=True, max_num_fields=MAX_QUERY_FIELDS)
        except ValueError as exc:
            raise InvalidField("The query string is malformed.", log_detail=str(exc)) from None
        for name, values in parsed.items():
            fields[name] = _text(name, values[-1])
    header = headers.get("Content-Type", "")
    media_type = header.split(";")[0].strip().lower()  # media types are case-insensitive
    # curl -d sends JSON labelled as a form; a form body never starts with '{'.
    looks_json = body.lstrip()[:1] == b"{"
    if media_type in FORM_TYPES and not looks_json:
        arguments: dict[str, list[bytes]] = {}
        try:
            params = header[len(header.split(";")[0]) :]
            tornado.httputil.parse_body_arguments(media_type + params, body, arguments, {}, headers)
        except tornado.httputil.HTTPInputError as exc:
            raise InvalidField("The form body is malformed.", log_detail=str(exc)) from None
        for name, values in arguments.items():
            fields[name] = _text(name, values[-1])
    elif body.strip():
        try:
            obj = loads(body)
        except (ValueError, RecursionError):
            raise InvalidJSON(log_detail="body does not parse as JSON") from None
        if not isinstance(obj, dict):
            raise InvalidJSON()
        for name, value in obj.items():
            _valid_text(name, name)
            if isinstance(value, str):
                fields[name] = _valid_text(name, value)
            elif name in STRING_FIELDS and value is not None:
                raise InvalidField(f"{name} must be a string.")
    return fields


def _valid_text(name: str, value: str) -> str:
    # JSON may carry lone surrogates ("\ud800"), which are not text: refuse them here
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        shown = name.encode("utf-8", "replace").decode("utf-8")  # the name may be broken too
        raise InvalidField(f"{shown} is not valid Unicode text.") from None
    return value


def _text(name: str, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        shown = name.encode("utf-8", "replace").decode("utf-8")
        raise InvalidField(f"{shown} is not valid UTF-8.") from None
