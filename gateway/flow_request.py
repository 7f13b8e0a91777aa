"""``/v1/{app}/{login|phone|userinfo|session|logout}``: the flow request path, request -> Context ->
pipeline -> JSON.

Flows are the hot path, so they are served by a Tornado ``HTTPMessageDelegate`` rather
than a ``RequestHandler``: the handler machinery (a copied query dict, default headers,
ETag checks, the generic dispatch) cost about 45 µs per request, a third of a bare
hello-world's whole budget (bench/RESULTS.md). This delegate does only what a flow
needs: the body is streamed in under the size limit (a declared oversized body is
refused before it is sent), fields are parsed after the request id exists (our errors,
not Tornado's bare 400), the pipeline runs in the connection's task under the request
timeout, and one JSON answer and one access event come out. Everything else (health, metrics,
the sandbox) stays on ``tornado.web``; :mod:`gateway.front` picks the path.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import re
import time
import urllib.parse
from collections.abc import Awaitable, Coroutine, Generator
from http.client import responses
from time import perf_counter
from typing import Any

import orjson
import tornado.escape
import tornado.httputil
from tornado.iostream import StreamClosedError

from gateway.context import Context
from gateway.errors import (
    BodyTimeout,
    BodyTooLarge,
    FlowNotConfigured,
    GatewayError,
    InvalidField,
    InvalidJSON,
    MethodNotAllowed,
    PipelineTimeout,
    StepFailed,
    Unauthorized,
    UnknownApp,
)
from gateway.logs import get_logger, mask_phone
from gateway.request_record import RequestRecord, record_request, request_id_from
from gateway.runtime import Gateway

LOGIN_FLOWS = frozenset({"login", "phone_oneshot"})
PHONE_FLOWS = frozenset({"phone", "phone_code", "phone_oneshot"})
# Fields the built-in flows read: they must be strings when present.
STRING_FIELDS = frozenset({"code", "encryptedData", "iv", "rawData", "signature", "cloudID"})
# Never sent to a client, whatever a step put in the response.
FORBIDDEN_RESPONSE_KEYS = frozenset({"session_key", "sessionKey", "previous_session_key", "secret", "access_token"})
# The flow endpoints and their methods (for 405's Allow header); gateway.front routes these.
ALLOWED_METHODS = {"login": "POST", "phone": "GET, POST", "userinfo": "POST", "session": "GET", "logout": "POST"}
# What Tornado accepts (ASCII digits; a list of equal values), so that we refuse first,
# with our JSON error, rather than run the flow on headers Tornado then refuses.
_CONTENT_LENGTH = re.compile(r"[0-9]+(?:\s*,\s*[0-9]+)*")
# RFC 9110's Host: a reg-name, IPv4 or [IP-literal], an optional port; no comma (two Host headers)
_HOST = re.compile(r"(?:[A-Za-z0-9\-._~%!$&'()*+;=]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]*)?")
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
MAX_QUERY_FIELDS = 1000  # Tornado's own guard against parsing costs, kept

PHONE_BOUND = "wxgate_phone_bound"
# A running pipeline is referenced here until it ends: the event loop keeps only weak
# references to tasks.
_running: set[asyncio.Task[None]] = set()


async def wait_for_flows(grace: float) -> None:
    """At shutdown: let flows running in tasks of their own finish (bounded)."""
    if _running:
        await asyncio.wait(list(_running), timeout=grace)


class _BodyDeadlines:
    """Requests whose body is still arriving, checked once a second. Most bodies come
    with their headers; a timer per request would cost more than this dictionary."""

    def __init__(self) -> None:
        self.waiting: dict[FlowRequest, float] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self.sweeping = False

    def wait_for(self, request: FlowRequest, deadline: float) -> None:
        self.waiting[request] = deadline
        loop = asyncio.get_running_loop()
        if not self.sweeping or loop is not self.loop:  # (a test runs each case on a new loop)
            self.loop, self.sweeping = loop, True
            loop.call_later(1.0, self.sweep, loop)

    def arrived(self, request: FlowRequest) -> None:
        self.waiting.pop(request, None)

    def sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        if loop is not self.loop:
            return
        now = time.monotonic()
        for request, deadline in list(self.waiting.items()):
            if deadline <= now:
                del self.waiting[request]
                request.body_timed_out()
        self.sweeping = bool(self.waiting)
        if self.sweeping:
            loop.call_later(1.0, self.sweep, loop)


class _HTTPDate:
    """The Date header, formatted once per second rather than once per request."""

    second = -1
    text = ""

    @classmethod
    def now(cls) -> str:
        second = int(time.time())
        if second != cls.second:
            cls.second, cls.text = second, tornado.httputil.format_timestamp(second)
        return cls.text


class _InContext:
    """Awaits a coroutine in a context of its own (``contextvars``), without a task.

    A task per request would give each its own copy of the context variables, and cost
    what the flow path saves by running in the connection's task. This drives the
    coroutine as a task would (what it awaits is passed up to the connection's task,
    cancellation and errors are passed down) with every step run in ``context``: a
    variable a step sets is not seen by the next request on the connection."""

    __slots__ = ("context", "coro")

    def __init__(self, coro: Coroutine[Any, Any, None], context: contextvars.Context) -> None:
        self.coro = coro
        self.context = context

    def __await__(self) -> Generator[Any, Any, None]:
        run, coro = self.context.run, self.coro
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                awaited = run(coro.send, value) if error is None else run(coro.throw, error)
            except StopIteration:
                return
            try:
                value, error = (yield awaited), None
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # e.g. the task's cancellation: the coroutine decides
                value, error = None, exc


class FlowRequest(tornado.httputil.HTTPMessageDelegate):
    """One request to a flow URL. ``app_path`` is the app segment of the path, still
    percent-encoded; ``endpoint`` is ``login``, ``phone`` or ``userinfo``."""

    def __init__(
        self,
        gateway: Gateway,
        connection: tornado.httputil.HTTPConnection,
        start_line: tornado.httputil.RequestStartLine,
        headers: tornado.httputil.HTTPHeaders,
        app_path: str,
        endpoint: str,
    ) -> None:
        self.gateway = gateway
        self.connection = connection
        self.headers = headers
        self.method = start_line.method
        self.version = start_line.version
        path, _, self.query = start_line.path.partition("?")
        self.endpoint = endpoint
        self.app_path = app_path
        context = connection.context  # type: ignore[attr-defined]
        # read now: with trusted proxy headers, Tornado restores the socket's address at finish()
        client_ip = getattr(context, "remote_ip", "") or ""
        self.record = RequestRecord(
            request_id=request_id_from(headers.get("X-Request-Id")),
            method=self.method,
            path=path,
            client_ip=client_ip,
            started=perf_counter(),
        )
        self.answered = False
        self.flow_started = False
        self.hold = False  # answers wait for finish() (see below)
        self.held: tuple[int, bytes, dict[str, str] | None] | None = None
        self.timed_out = False
        self.expected = 0  # body bytes declared by Content-Length (none declared: none sent)
        self.task: asyncio.Task[Any] | None = None
        self.read_done = False  # the whole request is read: the connection can be kept
        self.limit = gateway.config.server.max_body_bytes
        self.body = bytearray()

    # -- HTTPMessageDelegate ---------------------------------------------------------
    #
    # The flow runs in the connection's own task: headers_received (no body) or the
    # data_received that completes a Content-Length body returns the flow's coroutine,
    # which Tornado awaits before it reads on (documented flow control), in a context of
    # its own as a task would have (_InContext). The answer is held until finish(), which
    # Tornado calls at once after that, with the request read (an answer written while
    # reading would close a keep-alive connection). Answered synchronously in finish(), a
    # request skips what an asynchronous answer costs: a task, a close callback and two
    # epoll calls. A chunked body, whose end only finish() knows, runs in a task. Early
    # refusals (bad framing, 413, 408) are written at once: the rest of such a body is
    # not read, and the connection closes.

    def headers_received(
        self,
        start_line: tornado.httputil.RequestStartLine | tornado.httputil.ResponseStartLine,
        headers: tornado.httputil.HTTPHeaders,
    ) -> Awaitable[None] | None:
        refusal = self.framing_refusal(headers)
        if refusal is not None:
            self.fail(refusal)
            return None
        if self.expected == 0 and "Transfer-Encoding" not in headers:
            return _InContext(self.respond(hold=True), contextvars.copy_context())  # no body follows
        # the body gets request_timeout seconds to arrive, as the steps do afterwards
        _bodies.wait_for(self, time.monotonic() + self.gateway.current.config.server.request_timeout)
        return None

    def framing_refusal(self, headers: tornado.httputil.HTTPHeaders) -> GatewayError | None:
        """What Tornado would refuse before the body (with a bare 400), refused first with
        our JSON error; and a declared body over the limit."""
        version = self.version
        hosts = headers.get_list("Host")
        if len(hosts) > 1 or (hosts and not _HOST.fullmatch(hosts[0])) or (not hosts and version != "HTTP/1.0"):
            return InvalidField("The Host header is missing or malformed.")
        declared = headers.get("Content-Length")
        transfer = headers.get("Transfer-Encoding")
        if transfer is not None and (declared is not None or transfer.lower() != "chunked"):
            return InvalidField("The body's framing is malformed (Transfer-Encoding).")
        if declared is not None:
            if declared.isascii() and declared.isdigit():
                self.expected = int(declared)
            elif _CONTENT_LENGTH.fullmatch(declared) and len({v.strip() for v in declared.split(",")}) == 1:
                self.expected = int(declared.split(",")[0])
            else:
                return InvalidField("The Content-Length header is malformed.")
            if self.expected > self.limit:
                return BodyTooLarge.over(self.limit)
        return None

    def body_timed_out(self) -> None:
        if not self.answered and not self.flow_started and not self.read_done:
            self.fail(BodyTimeout(log_detail=f"{len(self.body)} bytes received"))

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        if self.answered:
            return None  # answered early (e.g. 413): the rest of the body is not ours to read
        self.body += chunk
        if len(self.body) > self.limit:
            self.fail(BodyTooLarge.over(self.limit))
            return None
        if len(self.body) == self.expected:
            _bodies.arrived(self)
            return _InContext(self.respond(hold=True), contextvars.copy_context())
        return None

    def finish(self) -> None:
        self.read_done = True
        _bodies.arrived(self)
        if self.held is not None:
            self.write(*self.held)
        elif not self.answered and not self.flow_started:
            task = asyncio.get_running_loop().create_task(self.respond(hold=False))
            _running.add(task)
            task.add_done_callback(_running.discard)

    def on_connection_close(self) -> None:
        # The client left. A pipeline already running finishes (nothing is left
        # half-written); its answer has nowhere to go.
        _bodies.arrived(self)

    # -- the flow --------------------------------------------------------------------

    async def respond(self, hold: bool) -> None:
        self.flow_started = True
        self.hold = hold
        self.task = task = asyncio.current_task()
        assert task is not None  # Tornado awaits this in the connection's task, or finish() made one
        # server.request_timeout, from the whole request's arrival: a timer that cancels
        # the task costs half of what asyncio.timeout() does (2.3 against 4.4 µs).
        timer = task.get_loop().call_later(self.gateway.current.config.server.request_timeout, self.time_out)
        try:
            await self.run_flow()
        except GatewayError as exc:
            self.fail(exc)
        except asyncio.CancelledError:
            if self.timed_out:
                task.uncancel()
                self.fail(PipelineTimeout(log_detail="timed out before the pipeline started"))
            elif task.cancelling():
                raise  # this request's task itself is cancelled: the process is stopping
            else:  # something a step awaited was cancelled by someone else: that step failed
                get_logger("wxgate").error("step_await_cancelled", request_id=self.record.request_id)
                self.fail(StepFailed(log_detail="an await inside a step was cancelled"))
        except Exception as exc:
            get_logger("wxgate").error("unhandled_exception", request_id=self.record.request_id, exc_info=True)
            self.fail(StepFailed(log_detail=f"unhandled {type(exc).__name__}"))
        finally:
            timer.cancel()

    def time_out(self) -> None:
        if not self.answered and self.task is not None:
            self.timed_out = True
            self.task.cancel()

    async def run_flow(self) -> None:
        method, endpoint = self.method, self.endpoint
        gateway = self.gateway
        snapshot = gateway.current  # this request finishes on it, whatever a reload does
        try:
            app_name = urllib.parse.unquote(self.app_path, errors="strict")
        except UnicodeDecodeError:
            raise UnknownApp() from None
        app = snapshot.apps.get(app_name)
        if method not in ("GET", "POST"):
            raise MethodNotAllowed()
        if app is None:
            raise UnknownApp()
        if method not in ALLOWED_METHODS[endpoint]:
            raise MethodNotAllowed(hint=f"/v1/{{app}}/{endpoint} accepts {ALLOWED_METHODS[endpoint]}.")
        record = self.record
        record.app = app_name
        fields = self.parse_fields()
        token = self.bearer_token()
        record.flow = flow = choose_flow(endpoint, token, fields)
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
        except asyncio.CancelledError:
            if not self.timed_out:
                raise  # respond() tells a stopping process from a step's cancelled await
            if self.task is not None:
                self.task.uncancel()
            ctx.failed_step = next(reversed(ctx.timings), None)
            error: GatewayError = PipelineTimeout(log_detail=f"timed out in step {ctx.failed_step}")
            self.notify_step_failed(ctx, error)
            raise error from None
        except GatewayError as exc:
            self.notify_step_failed(ctx, exc)
            raise
        self.notify_outcome(ctx)
        if ctx.status == 204:
            self.send(204, None)
            return
        response = {k: v for k, v in ctx.response.items() if k not in FORBIDDEN_RESPONSE_KEYS}
        self.send(ctx.status, response)

    def notify_step_failed(self, ctx: Context, error: GatewayError) -> None:
        self.gateway.hooks.notify(
            "wxgate_step_failed",
            request_id=ctx.request_id,
            app=self.record.app,
            flow=ctx.flow,
            step=ctx.failed_step or "",
            error=error.code,
            status=error.status,
        )

    def notify_outcome(self, ctx: Context) -> None:
        session, hooks = ctx.session, self.gateway.hooks
        if session is None:
            return
        common = {"request_id": ctx.request_id, "app": self.record.app, "appid": ctx.app.appid}
        common["openid"] = session.openid
        if ctx.flow in LOGIN_FLOWS and hooks.has("wxgate_user_logged_in"):
            user = ctx.state.get("wxgate.user")
            first = user.logins == 1 if user is not None else None
            hooks.notify("wxgate_user_logged_in", unionid=session.unionid, first_login=first, **common)
        pure, country = ctx.data.get("purePhoneNumber"), ctx.data.get("countryCode")
        if ctx.flow in PHONE_FLOWS and isinstance(pure, str) and isinstance(country, str) and hooks.has(PHONE_BOUND):
            hooks.notify(PHONE_BOUND, masked_phone=mask_phone(pure), country_code=country, **common)

    # -- reading the request -----------------------------------------------------------

    def bearer_token(self) -> str | None:
        header = self.headers.get("Authorization")
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
        if self.query:
            try:
                query = tornado.escape.parse_qs_bytes(
                    self.query, keep_blank_values=True, max_num_fields=MAX_QUERY_FIELDS
                )
            except ValueError as exc:
                raise InvalidField("The query string is malformed.", log_detail=str(exc)) from None
            for name, values in query.items():
                fields[name] = _text(name, values[-1])
        body = bytes(self.body)
        header = self.headers.get("Content-Type", "")
        media_type = header.split(";")[0].strip().lower()  # media types are case-insensitive
        # curl -d sends JSON labelled as a form; a form body never starts with '{'.
        looks_json = body.lstrip()[:1] == b"{"
        if media_type in FORM_TYPES and not looks_json:
            arguments: dict[str, list[bytes]] = {}
            try:
                params = header[len(header.split(";")[0]) :]
                tornado.httputil.parse_body_arguments(media_type + params, body, arguments, {}, self.headers)
            except tornado.httputil.HTTPInputError as exc:
                raise InvalidField("The form body is malformed.", log_detail=str(exc)) from None
            for name, values in arguments.items():
                fields[name] = _text(name, values[-1])
        elif body.strip():
            try:
                obj = _loads(body)
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

    # -- answering ---------------------------------------------------------------------

    def fail(self, error: GatewayError) -> None:
        self.record.error = error
        headers = {}
        if error.client_retry_after is not None:
            headers["Retry-After"] = str(error.client_retry_after)
        if isinstance(error, MethodNotAllowed):
            headers["Allow"] = ALLOWED_METHODS[self.endpoint]
        ctx = self.record.ctx
        # resending cannot succeed once a step spent something single-use (a code)
        retryable = error.retryable and not (ctx is not None and ctx.single_use_spent)
        self.send(error.status, error.body(retryable), headers)

    def send(self, status: int, payload: dict[str, Any] | None, extra: dict[str, str] | None = None) -> None:
        """Answer with ``payload`` as JSON, or with no body at all when it is None (204)."""
        if self.answered:
            return
        body = b"" if payload is None else _dumps(payload)
        self.answered = True
        if self.hold:
            self.held = (status, body, extra)  # written by finish()
        else:
            self.write(status, body, extra)

    def write(self, status: int, body: bytes, extra: dict[str, str] | None) -> None:
        _bodies.arrived(self)  # e.g. a 413 while the body was arriving
        headers = tornado.httputil.HTTPHeaders()
        if status != 204:  # a 204 has neither a body nor a Content-Length (RFC 9110)
            headers["Content-Type"] = "application/json; charset=utf-8"
            headers["Content-Length"] = str(len(body))
        headers["Cache-Control"] = "no-store"
        headers["Date"] = _HTTPDate.now()
        headers["X-Request-Id"] = self.record.request_id
        if extra:
            headers.update(extra)
        if not self.read_done:
            # answered before the whole request was read (413, 408, bad framing): Tornado
            # will close the connection rather than read the rest; say so
            headers["Connection"] = "close"
        start_line = tornado.httputil.ResponseStartLine("HTTP/1.1", status, responses.get(status, "Unknown"))
        try:
            self.connection.write_headers(start_line, headers, None if self.method == "HEAD" or not body else body)
            self.connection.finish()
        except StreamClosedError:
            pass  # the client left; the request is still recorded below
        record_request(self.gateway, self.record, status)


_bodies = _BodyDeadlines()


def choose_flow(endpoint: str, token: str | None, fields: dict[str, str]) -> str:
    """/phone serves three flows: with a token, encryptedData (``phone``) or a one-time
    phone code (``phone_code``); without one, a wx.login code (``phone_oneshot``). Every
    other endpoint is the flow of its name."""
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


def _loads(body: bytes) -> Any:
    # orjson first (a tenth of the cost); what it refuses (lone surrogates, integers over
    # 64 bits, NaN) gets the standard library's verdict, so answers do not change.
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return json.loads(body)


def _dumps(payload: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(payload, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:  # e.g. an integer over 64 bits from a plugin step
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


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
