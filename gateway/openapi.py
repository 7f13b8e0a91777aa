"""The OpenAPI 3.1 document served at /openapi.json: every endpoint, field and error code.

Built from the code's own tables (the error classes, the flows), so it cannot drift
from what the handlers do; tests check live responses against it.
"""

from __future__ import annotations

from typing import Any

from gateway import __version__
from gateway.errors import all_error_classes

_STRING = {"type": "string"}


def _error_statuses() -> dict[int, list[str]]:
    by_status: dict[int, list[str]] = {}
    for cls in all_error_classes():
        by_status.setdefault(cls.status, [])
        if cls.code not in by_status[cls.status]:
            by_status[cls.status].append(cls.code)
    return by_status


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _responses(ok: str | None, statuses: dict[int, list[str]]) -> dict[str, Any]:
    """``ok`` None: success is 204 with no body."""
    success = {"204": {"description": "Done; no body"}} if ok is None else {"200": _json(_ref(ok), "Success")}
    responses: dict[str, Any] = dict(success)
    for status, codes in sorted(statuses.items()):
        described = ", ".join(codes)
        responses[str(status)] = _json(_ref("Error"), f"Error; `error.code` is one of: {described}")
    return responses


def _fields(required: list[str], **properties: str) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {name: {"type": "string", "description": text} for name, text in properties.items()},
        "required": required,
    }


def build_openapi() -> dict[str, Any]:
    statuses = _error_statuses()
    app_param = {"name": "app", "in": "path", "required": True, "schema": _STRING, "description": "App name."}
    body = {"content": {}, "required": False}

    def request_body(schema: str, required: bool = False) -> dict[str, Any]:
        return {
            **body,
            "required": required,
            "content": {
                "application/json": {"schema": _ref(schema)},
                "application/x-www-form-urlencoded": {"schema": _ref(schema)},
            },
        }

    code_schema = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,128}$"}
    phone_query = [
        {
            "name": name,
            "in": "query",
            "required": False,
            "schema": code_schema if name == "code" else _STRING,
            "description": text,
        }
        for name, text in (
            ("code", "A fresh wx.login code (one-shot flow)."),
            ("encryptedData", "From getPhoneNumber, URL-encoded."),
            ("iv", "From getPhoneNumber, URL-encoded."),
        )
    ]
    schemas: dict[str, Any] = {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message", "hint", "retryable"],
                    "properties": {
                        "code": {"type": "string", "enum": sorted({c for codes in statuses.values() for c in codes})},
                        "message": _STRING,
                        "hint": _STRING,
                        "retryable": {
                            "type": "boolean",
                            "description": "Resending this same request can succeed (after Retry-After, or after "
                            "a fresh login for a 401) and spends nothing single-use. Resend only when true.",
                        },
                    },
                    "additionalProperties": False,
                }
            },
            "additionalProperties": False,
        },
        "LoginRequest": {
            "type": "object",
            "properties": {
                "code": {
                    "type": "string",
                    "pattern": "^[A-Za-z0-9_-]{1,128}$",
                    "description": "The code from wx.login (single use, about 5 minutes).",
                }
            },
            "required": ["code"],
        },
        "LoginResponse": {
            "type": "object",
            "required": ["token", "openid", "expires_in"],
            "properties": {
                "token": {"type": "string", "description": "Send as Authorization: Bearer <token>."},
                "openid": _STRING,
                "unionid": {"type": ["string", "null"]},
                "expires_in": {"type": "integer", "description": "Seconds."},
            },
        },
        "PhoneRequest": _fields(
            [],
            encryptedData="From getPhoneNumber (with a token, or with code for the one-shot flow).",
            iv="From getPhoneNumber.",
            code="With a token: the button's phone code (2.21.2+). Without: a fresh wx.login code (one-shot).",
            cloudID="With a token, and without code and encryptedData: the event's cloudID (cloud development, "
            "2.8.0+), exchanged at WeChat's getopendata (phone_cloud flow).",
        ),
        "PhoneResponse": {
            "type": "object",
            "required": ["phoneNumber", "purePhoneNumber", "countryCode"],
            "properties": {"phoneNumber": _STRING, "purePhoneNumber": _STRING, "countryCode": _STRING},
        },
        "UserInfoRequest": _fields(
            [],
            encryptedData="From wx.getUserProfile (with iv; the userinfo flow).",
            iv="From wx.getUserProfile.",
            rawData="Optional; checked with signature (userinfo flow).",
            signature="sha1(rawData + session_key), from wx.getUserProfile.",
            cloudID="Without encryptedData: wx.getUserProfile's cloudID (cloud development), exchanged at "
            "WeChat's getopendata (userinfo_cloud flow).",
        ),
        "UserInfoResponse": {
            "type": "object",
            "required": ["openId"],
            "properties": {"openId": _STRING, "nickName": _STRING, "unionId": _STRING, "avatarUrl": _STRING},
            "not": {"required": ["watermark"]},
        },
        "SessionResponse": {
            "type": "object",
            "required": ["openid", "unionid", "expires_in", "phone"],
            "properties": {
                "openid": _STRING,
                "unionid": {"type": ["string", "null"]},
                "expires_in": {"type": "integer", "description": "Seconds the token stays valid."},
                "phone": {
                    "description": "The bound phone number, masked, or null: ask for it only when null.",
                    "oneOf": [
                        {"type": "null"},
                        {
                            "type": "object",
                            "required": ["masked", "countryCode"],
                            "properties": {"masked": _STRING, "countryCode": _STRING},
                        },
                    ],
                },
            },
        },
        "Health": {"type": "object", "required": ["status"], "properties": {"status": _STRING}},
    }
    schemas["PhoneRequest"]["properties"]["code"].update(pattern=code_schema["pattern"])
    bearer: list[dict[str, list[str]]] = [{"bearer": []}]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "wxgate",
            "version": __version__,
            "description": "Gateway for WeChat mini-program back ends: login, phone, user info, session, logout.",
        },
        "paths": {
            "/v1/{app}/login": {
                "post": {
                    "summary": "Exchange a wx.login code for a session token",
                    "operationId": "login",
                    "parameters": [app_param],
                    "requestBody": request_body("LoginRequest", required=True),
                    "responses": _responses("LoginResponse", statuses),
                }
            },
            "/v1/{app}/phone": {
                "post": {
                    "summary": "The user's phone number (token + encryptedData, token + phone code, token + "
                    "cloudID, or one-shot)",
                    "operationId": "phone",
                    "parameters": [app_param, *phone_query],
                    "security": [*bearer, {}],
                    "requestBody": request_body("PhoneRequest"),
                    "responses": _responses("PhoneResponse", statuses),
                },
                "get": {
                    "summary": "One-shot phone call with query fields, as older clients do",
                    "operationId": "phoneOneShot",
                    "parameters": [app_param, *phone_query],
                    "responses": _responses("PhoneResponse", statuses),
                },
            },
            "/v1/{app}/userinfo": {
                "post": {
                    "summary": "The user's profile, decrypted or from its cloudID (watermark removed)",
                    "operationId": "userinfo",
                    "parameters": [app_param],
                    "security": bearer,
                    "requestBody": request_body("UserInfoRequest"),
                    "responses": _responses("UserInfoResponse", statuses),
                }
            },
            "/v1/{app}/session": {
                "get": {
                    "summary": "Check a stored token: who it is for, how long it lasts, the bound phone",
                    "operationId": "session",
                    "parameters": [app_param],
                    "security": bearer,
                    "responses": _responses("SessionResponse", statuses),
                }
            },
            "/v1/{app}/logout": {
                "post": {
                    "summary": "Revoke the token at once, for every process and host",
                    "operationId": "logout",
                    "parameters": [app_param],
                    "security": bearer,
                    "responses": _responses(None, statuses),
                }
            },
            "/healthz": {"get": {"summary": "The process is up", "responses": {"200": _json(_ref("Health"), "Up")}}},
            "/readyz": {
                "get": {
                    "summary": "Storage and upstreams reachable, configuration loaded",
                    "responses": {"200": _json(_ref("Health"), "Ready"), "503": _json(_ref("Health"), "Not ready")},
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {
                        "200": {"description": "Text format", "content": {"text/plain": {"schema": _STRING}}}
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {}}}},
                }
            },
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
