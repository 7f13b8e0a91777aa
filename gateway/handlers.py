"""HTTP handlers: request -> Context -> pipeline -> JSON; the one error body."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import time
from typing import Any

import tornado.httputil
import tornado.web

from gateway.context import Context
from gateway.errors import (
    BodyTooLarge,
    FlowNotConfigured,
    GatewayError,
    InvalidField,
    InvalidJSON,
    MethodNotAllowed,
    NotFound,
    PipelineTimeout,
    StepFailed,
    Unauthorized,
    UnknownApp,
)
from gateway.logs import get_logger, mask_phone
from gateway.metrics import CONTENT_TYPE
from gateway.openapi import build_openapi
from gateway.runtime import Gateway

LOGIN_FLOWS = frozenset({"login", "phone_oneshot"})
PHONE_FLOWS = frozenset({"phone", "phone_code", "phone_oneshot"})
# Fields the built-in flows read: they must be strings when present.
STRING_FIELDS = frozenset({"code", "encryptedData", "iv", "rawData", "signature", "cloudID"})
# Never sent to a client, whatever a step put in the response.
FORBIDDEN_RESPONSE_KEYS = frozenset({"session_key", "sessionKey", "previous_session_key", "secret", "access_token"})
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


class JSONHandler(tornado.web.RequestHandler):
    """Base: request id, JSON answers, the one error body, one access event."""

    gateway: Gateway

    def initialize(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.started = time.perf_counter()
        self.app_name = ""
        self.flow = ""
        self.error: GatewayError | None = None
        self.ctx: Context | None = None

    def prepare(self) -> None:
        given = self.request.headers.get("X-Request-Id", "")
        self.request_id = given if given and _REQUEST_ID.match(given) else os.urandom(16).hex()
        self.set_header("X-Request-Id", self.request_id)
        limit = self.gateway.config.server.max_body_bytes
        if len(self.request.body or b"") > limit:
            raise BodyTooLarge(f"The request body is over {limit} bytes.")

    def check_xsrf_cookie(self) -> None:  # a JSON API for mini programs, not browser forms
        pass

    def write_json(self, payload: dict[str, Any], status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(payload, ensure_ascii=False, separators=(",", ":")))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        self.error = _as_gateway_error(exc, status_code)
        if not getattr(self, "request_id", ""):  # refused before prepare() ran
            self.request_id = os.urandom(16).hex()
        self.set_header("X-Request-Id", self.request_id)
        if self.error.client_retry_after is not None:
            self.set_header("Retry-After", str(self.error.client_retry_after))
        self.write_json(self.error.body(), self.error.status)

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        # Tornado's version logs the full URI, whose query may carry codes and data.
        if isinstance(value, GatewayError | tornado.web.HTTPError):
            return
        get_logger("wxgate").error(
            "unhandled_exception", request_id=getattr(self, "request_id", ""), exc_info=(typ, value, tb)
        )

    def on_finish(self) -> None:
        event: dict[str, Any] = {
            "request_id": getattr(self, "request_id", ""),
            "method": self.request.method,
            "path": self.request.path,
            "status": self.get_status(),
            "duration_ms": round((time.perf_counter() - self.started) * 1000.0, 3),
            "client_ip": self.request.remote_ip,
        }
        if self.app_name:
            event["app"] = self.app_name
        if self.flow:
            event["flow"] = self.flow
        if self.ctx is not None:
            event["steps"] = self.ctx.timings
            if self.ctx.session is not None:
                event["openid"] = self.ctx.session.openid
        if self.error is not None:
            event["error"] = self.error.code
            if self.error.log_detail:
                event["detail"] = self.error.log_detail
        self.gateway.access_log.info("request", **event)
        if self.ctx is not None:
            # labels only from configured apps and flows: never from what a client typed
            seconds = event["duration_ms"] / 1000.0
            self.gateway.metrics.request(self.app_name, self.flow, event["status"], seconds, self.ctx.timings)
            limited = self.ctx.state.get("wxgate.rate_limited")
            if limited:
                self.gateway.metrics.limited(self.app_name, self.flow, limited)
            self.gateway.hooks.notify(
                "wxgate_request_finished",
                request_id=event["request_id"],
                app=self.app_name,
                flow=self.flow,
                status=event["status"],
                error=event.get("error"),
                duration_ms=event["duration_ms"],
                steps=self.ctx.timings,
            )


@tornado.web.stream_request_body
class FlowHandler(JSONHandler):
    """``/v1/{app}/{login|phone|userinfo}``: runs the app's pipeline for the flow.

    The body is streamed in so that the size limit is enforced as it arrives (a declared
    oversized body is refused before it is sent) and forms are parsed here, after the
    request id exists, with our errors rather than Tornado's bare 400."""

    def prepare(self) -> None:
        super().prepare()
        self.limit = self.gateway.config.server.max_body_bytes
        self.body = bytearray()
        declared = self.request.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self.limit:
            raise BodyTooLarge(f"The request body is over {self.limit} bytes.")

    def data_received(self, chunk: bytes) -> None:
        self.body += chunk
        if len(self.body) > self.limit:
            raise BodyTooLarge(f"The request body is over {self.limit} bytes.")

    async def get(self, app_name: str, endpoint: str) -> None:
        if app_name not in self.gateway.apps:
            raise UnknownApp()
        if endpoint != "phone":
            raise MethodNotAllowed(hint="Only /v1/{app}/phone accepts GET (the one-shot flow).")
        await self.run_flow(app_name, endpoint)

    async def post(self, app_name: str, endpoint: str) -> None:
        await self.run_flow(app_name, endpoint)

    async def run_flow(self, app_name: str, endpoint: str) -> None:
        self.app_name = app_name
        snapshot = self.gateway.current  # this request finishes on it, whatever a reload does
        app = snapshot.apps.get(app_name)
        if app is None:
            raise UnknownApp()
        fields = self.parse_fields()
        token = self.bearer_token()
        self.flow = self.choose_flow(endpoint, token, fields)
        pipeline = app.pipelines.get(self.flow)
        if pipeline is None:
            raise FlowNotConfigured(f"The flow {self.flow!r} is not configured for app {app_name!r}.")
        self.ctx = ctx = Context(
            app=app.config,
            flow=self.flow,
            fields=fields,
            token=token,
            wechat=app.wechat,
            storage=self.gateway.storage,
            events=snapshot.events,
            log=self.gateway.access_log.bind(request_id=self.request_id, app=app_name, flow=self.flow),
            request_id=self.request_id,
            client_ip=self.request.remote_ip or "",
        )
        hooks = self.gateway.hooks
        hooks.notify(
            "wxgate_request_started", request_id=self.request_id, app=app_name, flow=self.flow, client_ip=ctx.client_ip
        )
        try:
            async with asyncio.timeout(snapshot.config.server.request_timeout):
                await pipeline.run(ctx)
        except TimeoutError:
            ctx.failed_step = next(reversed(ctx.timings), None)
            error: GatewayError = PipelineTimeout(log_detail=f"timed out in step {ctx.failed_step}")
            self.notify_step_failed(ctx, error)
            raise error from None
        except GatewayError as exc:
            self.notify_step_failed(ctx, exc)
            raise
        self.notify_outcome(ctx)
        response = {k: v for k, v in ctx.response.items() if k not in FORBIDDEN_RESPONSE_KEYS}
        self.write_json(response)

    def notify_step_failed(self, ctx: Context, error: GatewayError) -> None:
        self.gateway.hooks.notify(
            "wxgate_step_failed",
            request_id=ctx.request_id,
            app=self.app_name,
            flow=ctx.flow,
            step=ctx.failed_step or "",
            error=error.code,
            status=error.status,
        )

    def notify_outcome(self, ctx: Context) -> None:
        session, hooks = ctx.session, self.gateway.hooks
        if session is None:
            return
        common = {"request_id": ctx.request_id, "app": self.app_name, "appid": ctx.app.appid, "openid": session.openid}
        if ctx.flow in LOGIN_FLOWS:
            user = ctx.state.get("wxgate.user")
            first = user.logins == 1 if user is not None else None
            hooks.notify("wxgate_user_logged_in", unionid=session.unionid, first_login=first, **common)
        pure, country = ctx.data.get("purePhoneNumber"), ctx.data.get("countryCode")
        if ctx.flow in PHONE_FLOWS and isinstance(pure, str) and isinstance(country, str):
            hooks.notify("wxgate_phone_bound", masked_phone=mask_phone(pure), country_code=country, **common)

    @staticmethod
    def choose_flow(endpoint: str, token: str | None, fields: dict[str, str]) -> str:
        """/phone serves three flows: with a token, encryptedData (``phone``) or a one-time
        phone code (``phone_code``); without one, a wx.login code (``phone_oneshot``)."""
        if endpoint != "phone":
            return endpoint
        if token is not None:
            return "phone_code" if "code" in fields and "encryptedData" not in fields else "phone"
        if "code" in fields:
            return "phone_oneshot"
        raise Unauthorized(
            hint="Send 'Authorization: Bearer <token>' from /v1/{app}/login, or a fresh wx.login "
            "'code' with encryptedData and iv for the one-shot call."
        )

    def bearer_token(self) -> str | None:
        header = self.request.headers.get("Authorization")
        if header is None:
            return None
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("The Authorization header must be 'Bearer <token>'.")
        return token

    def parse_fields(self) -> dict[str, str]:
        """Query, then form or JSON body fields (the body wins); string values only."""
        fields: dict[str, str] = {}
        for name, values in self.request.query_arguments.items():
            fields[name] = _text(name, values[-1])
        body = bytes(self.body)
        header = self.request.headers.get("Content-Type", "")
        media_type = header.split(";")[0].strip().lower()  # media types are case-insensitive
        # curl -d sends JSON labelled as a form; a form body never starts with '{'.
        looks_json = body.lstrip()[:1] == b"{"
        if media_type in ("application/x-www-form-urlencoded", "multipart/form-data") and not looks_json:
            arguments: dict[str, list[bytes]] = {}
            try:
                params = header[len(header.split(";")[0]) :]
                tornado.httputil.parse_body_arguments(media_type + params, body, arguments, {}, self.request.headers)
            except tornado.httputil.HTTPInputError as exc:
                raise InvalidField("The form body is malformed.", log_detail=str(exc)) from None
            for name, values in arguments.items():
                fields[name] = _text(name, values[-1])
        elif body.strip():
            try:
                obj = json.loads(body)
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


def _as_gateway_error(exc: BaseException | None, status_code: int) -> GatewayError:
    if isinstance(exc, GatewayError):
        return exc
    # Tornado's own HTTPErrors (bad method, malformed request) still get our body.
    if status_code == 405:
        return MethodNotAllowed()
    if status_code == 404:
        return NotFound()
    if 400 <= status_code < 500:
        detail = exc.log_message if isinstance(exc, tornado.web.HTTPError) else None
        return InvalidField(log_detail=detail)
    return StepFailed(log_detail=f"unhandled {type(exc).__name__}" if exc else f"status {status_code}")


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


class NotFoundHandler(JSONHandler):
    def prepare(self) -> None:
        super().prepare()
        raise NotFound()


class HealthHandler(JSONHandler):
    """/healthz: the process is up and serving."""

    def get(self) -> None:
        self.write_json({"status": "ok", "config": self.gateway.config.digest, "pid": os.getpid()})


class ReadyHandler(JSONHandler):
    """/readyz: storage answers, every upstream is reachable, a configuration is loaded."""

    async def get(self) -> None:
        checks: dict[str, str] = {}
        try:
            await self.gateway.storage.ping()
            checks["storage"] = "ok"
        except GatewayError as exc:
            checks["storage"] = exc.code
        for name, app in self.gateway.apps.items():
            reachable = app.config.uses_sandbox or await self.gateway.probes.reachable(app.config.upstream)
            checks[f"upstream:{name}"] = "ok" if reachable else "unreachable"
        ready = all(value == "ok" for value in checks.values())
        self.write_json(
            {"status": "ready" if ready else "not_ready", "checks": checks, "config": self.gateway.config.digest},
            200 if ready else 503,
        )


class OpenAPIHandler(JSONHandler):
    """/openapi.json, built once per process."""

    document: bytes | None = None

    def get(self) -> None:
        if OpenAPIHandler.document is None:
            OpenAPIHandler.document = json.dumps(build_openapi(), ensure_ascii=False).encode()
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(OpenAPIHandler.document)


class MetricsHandler(JSONHandler):
    """/metrics in Prometheus' text format."""

    async def get(self) -> None:
        # if storage is down the scrape still reports everything else; /readyz tells about storage
        with contextlib.suppress(GatewayError):
            self.gateway.metrics.set_outbox(await self.gateway.storage.count_events())
        self.set_header("Content-Type", CONTENT_TYPE)
        self.finish(self.gateway.metrics.render())
