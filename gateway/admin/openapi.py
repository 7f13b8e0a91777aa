"""The admin API's own OpenAPI 3.1 document, served at ``/admin/api/openapi.json``.

Kept beside the handlers it describes; the tests check every route against it and every
answer they get against its schema.
"""

from __future__ import annotations

from typing import Any

from gateway import __version__
from gateway.storage import EVENT_STATUSES

_STR = {"type": "string"}
_INT = {"type": "integer", "minimum": 0}
_NUM = {"type": "number"}
_MS = {"type": ["number", "null"], "description": "Milliseconds; null when nothing was observed."}
_TIME = {"type": "number", "description": "Unix time (seconds)."}
_COUNTS = {"type": "object", "additionalProperties": _INT}


def _obj(required: list[str] | None = None, **properties: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(properties) if required is None else required}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _ok(schema: str, description: str = "Success") -> dict[str, Any]:
    return {
        "200": {"description": description, "content": {"application/json": {"schema": _ref(schema)}}},
        "400": {"description": "A malformed request", "content": {"application/json": {"schema": _ref("Error")}}},
        "401": {
            "description": "No admin token, or a wrong one",
            "content": {"application/json": {"schema": _ref("Error")}},
        },
    }


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


_FLOW_TRAFFIC = _obj(
    flow=_STR,
    requests=_INT,
    requests_per_second=_NUM,
    p50_ms=_MS,
    p99_ms=_MS,
    statuses={**_COUNTS, "description": "Answers by HTTP status."},
    errors={**_COUNTS, "description": "Error answers by their code."},
)
_STEP = _obj(
    label=_STR,
    step=_STR,
    options={"type": "object", "description": "The step's options, secrets masked as ***."},
    where={**_STR, "description": "file:line where the step is declared."},
    calls=_INT,
    p50_ms=_MS,
    p99_ms=_MS,
    failures={**_COUNTS, "description": "Times the step stopped its flow, by error code."},
)
_PHONE_LOOKUP = _obj(available={"type": "boolean"}, reason={"type": ["string", "null"]})
_EVENT = _obj(
    id=_STR,
    type=_STR,
    appid=_STR,
    endpoint=_STR,
    status={"enum": list(EVENT_STATUSES)},
    attempts=_INT,
    created_at=_TIME,
    next_attempt_at={"type": ["number", "null"]},
    last_error={"type": ["string", "null"]},
)
_USER = _obj(
    openid=_STR,
    user={"type": ["object", "null"], "properties": {"first_seen": _TIME, "last_seen": _TIME, "logins": _INT}},
    phones={
        "type": "array",
        "items": _obj(
            masked=_STR,
            country_code=_STR,
            stored_as={"enum": ["plain", "hashed", "masked"]},
            first_seen=_TIME,
            last_seen=_TIME,
        ),
    },
    sessions={
        "type": "array",
        "items": _obj(
            id={**_STR, "description": "The first digits of the token's hash."}, created_at=_TIME, expires_at=_TIME
        ),
    },
)
_DRAFT_ERROR = _obj(line={"type": ["integer", "null"]}, column={"type": ["integer", "null"]}, message=_STR)

SCHEMAS: dict[str, Any] = {
    "Error": _obj(
        error=_obj(code=_STR, message=_STR, hint=_STR, retryable={"type": "boolean"}),
    ),
    "Overview": _obj(
        window_seconds={**_NUM, "description": "The window the figures cover: 300, or less since the start."},
        config=_STR,
        apps={
            "type": "array",
            "items": _obj(
                name=_STR,
                appid=_STR,
                upstream=_STR,
                phone_lookup=_PHONE_LOOKUP,
                flows={"type": "array", "items": _FLOW_TRAFFIC},
            ),
        },
    ),
    "Pipelines": _obj(
        window_seconds=_NUM,
        config=_STR,
        apps={
            "type": "array",
            "items": _obj(
                name=_STR,
                appid=_STR,
                flows={
                    "type": "array",
                    "items": {"allOf": [_FLOW_TRAFFIC, _obj(steps={"type": "array", "items": _STEP})]},
                },
            ),
        },
    ),
    "Events": _obj(
        counts=_COUNTS,
        events={"type": "object", "additionalProperties": {"type": "array", "items": _EVENT}},
    ),
    "Requeued": _obj(requeued=_INT),
    "Purged": _obj(purged=_INT),
    "Users": _obj(app=_STR, phone_lookup=_PHONE_LOOKUP, users={"type": "array", "items": _USER}),
    "Revoked": _obj(revoked=_INT),
    "Config": _obj(
        digest=_STR,
        path=_STR,
        file_digest={"type": ["string", "null"]},
        file_errors={"type": "array", "items": _DRAFT_ERROR},
        reloads=_obj(ok=_INT, refused=_INT),
        last_reload={
            "type": ["object", "null"],
            "properties": {"result": _STR, "digest": _STR, "previous_digest": _STR, "at": _TIME},
        },
    ),
    "DraftCheck": _obj(valid={"type": "boolean"}, errors={"type": "array", "items": _DRAFT_ERROR}),
}


def _query(name: str, description: str, required: bool = False, **schema: Any) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema or _STR, "description": description}


PATHS: dict[str, Any] = {
    "/admin/api/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI"}}}},
    "/admin/api/overview": {
        "get": {
            "summary": "Apps and flows: requests/s, p50/p99, errors by code (last 5 minutes)",
            "responses": _ok("Overview"),
        }
    },
    "/admin/api/pipelines": {
        "get": {"summary": "Each flow's steps in order with options and timings", "responses": _ok("Pipelines")}
    },
    "/admin/api/events": {
        "get": {
            "summary": "Pending and dead-lettered webhook events",
            "parameters": [
                _query("status", "Only this status (default: pending and dead).", enum=list(EVENT_STATUSES)),
                _query("limit", "At most this many per status (default 100).", type="integer", minimum=1, maximum=1000),
            ],
            "responses": _ok("Events"),
        }
    },
    "/admin/api/events/retry": {
        "post": {
            "summary": "Queue dead-lettered events again (delivered at once)",
            "requestBody": _json_body(
                {"type": "object", "properties": {"ids": {"type": "array", "items": _STR}, "all": {"const": True}}}
            ),
            "responses": _ok("Requeued"),
        }
    },
    "/admin/api/events/purge": {
        "post": {
            "summary": "Delete dead-lettered events older than an age (0: all of them)",
            "requestBody": _json_body({"type": "object", "properties": {"older_than_seconds": _INT}}),
            "responses": _ok("Purged"),
        }
    },
    "/admin/api/users": {
        "get": {
            "summary": "A user by openid, or by phone number (+<country code><number>)",
            "parameters": [
                _query("app", "The app's name in the configuration.", required=True),
                _query("openid", "The user's openid."),
                _query("phone", "The number with its country code, e.g. +8613812345678."),
            ],
            "responses": {
                **_ok("Users"),
                "404": {"description": "No such app", "content": {"application/json": {"schema": _ref("Error")}}},
            },
        }
    },
    "/admin/api/users/revoke": {
        "post": {
            "summary": "Revoke every login session of a user, for every process at once",
            "requestBody": _json_body(_obj(app=_STR, openid=_STR)),
            "responses": _ok("Revoked"),
        }
    },
    "/admin/api/config": {
        "get": {"summary": "The running configuration's digest and the reloads", "responses": _ok("Config")}
    },
    "/admin/api/config/check": {
        "post": {
            "summary": "Check a YAML draft as `wxgate validate` does (empty environment; never applied)",
            "requestBody": {"required": True, "content": {"application/yaml": {"schema": _STR}}},
            "responses": _ok("DraftCheck"),
        }
    },
}


def build_admin_openapi() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "wxgate admin API",
            "version": __version__,
            "description": "The operator's console's API; every path needs the admin token (server.admin.token).",
        },
        "security": [{"adminToken": []}],
        "paths": PATHS,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"adminToken": {"type": "http", "scheme": "bearer"}},
        },
    }
