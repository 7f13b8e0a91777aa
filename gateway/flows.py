"""Flows: which flow a request to ``/v1/{app}/{endpoint}`` runs, running its pipeline, and
what the outcome tells the hooks. Knows nothing of the wire (:mod:`gateway.wire`) or of
how fields are read (:mod:`gateway.request_fields`)."""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from gateway.context import Context
from gateway.errors import FlowNotConfigured, GatewayError, MethodNotAllowed, Unauthorized, UnknownApp
from gateway.phones import masked_phone

if TYPE_CHECKING:
    from gateway.request_record import RequestRecord
    from gateway.runtime import AppRuntime, Gateway, Snapshot

LOGIN_FLOWS = frozenset({"login", "phone_oneshot"})
PHONE_FLOWS = frozenset({"phone", "phone_code", "phone_cloud", "phone_oneshot"})
# The flow endpoints and their methods (for 405's Allow header); gateway.front routes these.
ALLOWED_METHODS = {"login": "POST", "phone": "GET, POST", "userinfo": "POST", "session": "GET", "logout": "POST"}
# Never sent to a client, whatever a step put in the response.
FORBIDDEN_RESPONSE_KEYS = frozenset({"session_key", "sessionKey", "previous_session_key", "secret", "access_token"})
PHONE_BOUND = "wxgate_phone_bound"


def resolve_app(snapshot: Snapshot, method: str, endpoint: str, app_path: str) -> tuple[str, AppRuntime]:
    """The name and runtime of a flow URL's app (its path segment still percent-encoded),
    once the method is one the endpoint takes."""
    try:
        app_name = urllib.parse.unquote(app_path, errors="strict")
    except UnicodeDecodeError:
        raise UnknownApp() from None
    app = snapshot.apps.get(app_name)
    if method not in ("GET", "POST"):
        raise MethodNotAllowed()
    if app is None:
        raise UnknownApp()
    if method not in ALLOWED_METHODS[endpoint]:
        raise MethodNotAllowed(hint=f"/v1/{{app}}/{endpoint} accepts {ALLOWED_METHODS[endpoint]}.")
    return app_name, app


def choose_flow(endpoint: str, token: str | None, fields: Mapping[str, str]) -> str:
    """/phone serves four flows: with a token, encryptedData (``phone``), a one-time phone
    code (``phone_code``) or a cloudID without either (``phone_cloud``); without one, a
    wx.login code (``phone_oneshot``). /userinfo with a token and a cloudID but neither
    encryptedData nor code is ``userinfo_cloud``. Every other endpoint is the flow of its
    name. The cloudID flows need a token: without one, the request goes where it went
    before they existed (and is refused there)."""
    if endpoint == "userinfo":
        return "userinfo_cloud" if token is not None and _cloud_only(fields) else endpoint
    if endpoint != "phone":
        return endpoint
    if token is not None:
        if "encryptedData" in fields:
            return "phone"
        if "code" in fields:
            return "phone_code"
        return "phone_cloud" if "cloudID" in fields else "phone"
    if "code" in fields:
        return "phone_oneshot"
    raise Unauthorized(
        hint="Send 'Authorization: Bearer <token>' from /v1/{app}/login, or a fresh wx.login "
        "'code' with encryptedData and iv for the one-shot call."
    )


def _cloud_only(fields: Mapping[str, str]) -> bool:
    return "cloudID" in fields and "code" not in fields and "encryptedData" not in fields


async def run_flow(
    gateway: Gateway,
    snapshot: Snapshot,
    record: RequestRecord,
    app_name: str,
    app: AppRuntime,
    flow: str,
    fields: dict[str, str],
    token: str | None,
) -> tuple[int, dict[str, Any] | None]:
    """Runs the app's pipeline for ``flow``; the answer's status and JSON object (None: no
    body, a 204). A step's GatewayError is raised on, after the hooks heard of it."""
    pipeline = app.pipelines.get(flow)
    if pipeline is None:
        raise FlowNotConfigured(f"The flow {flow!r} is not configured for app {app_name!r}.")
    request_id = record.request_id
    record.ctx = ctx = Context(
        app=app.config,
        flow=flow,
        fields=fields,
        token=token,
        wechat=app.wechat,
        storage=gateway.storage,
        events=snapshot.events,
        log=gateway.access_log.bind(request_id=request_id, app=app_name, flow=flow),
        request_id=request_id,
        client_ip=record.client_ip,
    )
    hooks = gateway.hooks
    hooks.notify("wxgate_request_started", request_id=request_id, app=app_name, flow=flow, client_ip=ctx.client_ip)
    try:
        await pipeline.run(ctx)
    except GatewayError as exc:
        notify_step_failed(gateway, ctx, app_name, exc)
        raise
    notify_outcome(gateway, ctx, app_name)
    if ctx.status == 204:
        return 204, None
    return ctx.status, {k: v for k, v in ctx.response.items() if k not in FORBIDDEN_RESPONSE_KEYS}


def notify_step_failed(gateway: Gateway, ctx: Context, app_name: str, error: GatewayError) -> None:
    gateway.hooks.notify(
        "wxgate_step_failed",
        request_id=ctx.request_id,
        app=app_name,
        flow=ctx.flow,
        step=ctx.failed_step or "",
        error=error.code,
        status=error.status,
    )


def notify_outcome(gateway: Gateway, ctx: Context, app_name: str) -> None:
    session, hooks = ctx.session, gateway.hooks
    if session is None:
        return
    common = {"request_id": ctx.request_id, "app": app_name, "appid": ctx.app.appid, "openid": session.openid}
    if ctx.flow in LOGIN_FLOWS and hooks.has("wxgate_user_logged_in"):
        user = ctx.outcome.user
        first = user.logins == 1 if user is not None else None
        hooks.notify("wxgate_user_logged_in", unionid=session.unionid, first_login=first, **common)
    pure, country = ctx.data.get("purePhoneNumber"), ctx.data.get("countryCode")
    if ctx.flow in PHONE_FLOWS and isinstance(pure, str) and isinstance(country, str) and hooks.has(PHONE_BOUND):
        hooks.notify(PHONE_BOUND, masked_phone=masked_phone(pure, country), country_code=country, **common)
