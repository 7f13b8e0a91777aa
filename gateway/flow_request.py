"""``/v1/{app}/{login|phone|userinfo|session|logout}``: the delegate that serves a flow
request, wiring the wire (:mod:`gateway.wire`), the fields (:mod:`gateway.request_fields`)
and the flows (:mod:`gateway.flows`).

Flows are the hot path, so they are served by a Tornado ``HTTPMessageDelegate`` rather
than a ``RequestHandler``: the handler machinery (a copied query dict, default headers,
ETag checks, the generic dispatch) cost about 45 µs per request, a third of a bare
hello-world's whole budget (bench/RESULTS.md). This delegate does only what a flow
needs: the body is streamed in under the size limit (a declared oversized body is
refused before it is sent), fields are parsed after the request id exists (our errors,
not Tornado's bare 400), the pipeline runs in the connection's task under the request
timeout, and one JSON answer and one access event come out. Everything else (health,
metrics, the sandbox) stays on ``tornado.web``; :mod:`gateway.front` picks the path.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from time import perf_counter
from typing import Any

import tornado.httputil

from gateway.error_response import JSON_TYPE, render_error
from gateway.errors import BodyTimeout, BodyTooLarge, GatewayError, MethodNotAllowed, PipelineTimeout, StepFailed
from gateway.flows import ALLOWED_METHODS, choose_flow, notify_step_failed, resolve_app, run_flow
from gateway.jsoncodec import dumps
from gateway.logs import get_logger
from gateway.request_fields import bearer_token, parse_fields
from gateway.request_record import RequestRecord, record_request, request_id_from
from gateway.runtime import Gateway
from gateway.wire import BodyDeadlines, InContext, framing_refusal, write_answer

_ANSWER_HEADERS = {"Content-Type": JSON_TYPE, "Cache-Control": "no-store"}
# A running pipeline is referenced here until it ends: the event loop keeps only weak
# references to tasks.
_running: set[asyncio.Task[None]] = set()
_bodies = BodyDeadlines()


async def wait_for_flows(grace: float) -> None:
    """At shutdown: let flows running in tasks of their own finish (bounded)."""
    if _running:
        await asyncio.wait(list(_running), timeout=grace)


class FlowRequest(tornado.httputil.HTTPMessageDelegate):
    """One request to a flow URL. ``app_path`` is the app segment of the path, still
    percent-encoded; ``endpoint`` is one of :data:`gateway.flows.ALLOWED_METHODS`."""

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
        peer = getattr(connection.context, "remote_ip", "") or ""  # type: ignore[attr-defined]
        self.record = RequestRecord(
            request_id=request_id_from(headers.get("X-Request-Id")),
            method=self.method,
            path=path,
            client_ip=gateway.proxies.client_address(peer, headers),  # server.trusted_proxies
            started=perf_counter(),
        )
        self.answered = False
        self.flow_started = False
        self.hold = False  # answers wait for finish() (see below)
        self.held: tuple[int, bytes, dict[str, str]] | None = None
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
    # its own as a task would have (InContext). The answer is held until finish(), which
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
        refusal, self.expected = framing_refusal(self.version, headers, self.limit)
        if refusal is not None:
            self.fail(refusal)
            return None
        if self.expected == 0 and "Transfer-Encoding" not in headers:
            return InContext(self.respond(hold=True))  # no body follows
        # the body gets request_timeout seconds to arrive, as the steps do afterwards
        _bodies.wait_for(self, time.monotonic() + self.gateway.current.config.server.request_timeout)
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
            return InContext(self.respond(hold=True))
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
            await self.run()
        except GatewayError as exc:
            self.fail(exc)
        except asyncio.CancelledError:
            if self.timed_out:
                task.uncancel()
                self.fail(self.timeout_error())
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

    async def run(self) -> None:
        snapshot = self.gateway.current  # this request finishes on it, whatever a reload does
        record = self.record
        record.app, app = resolve_app(snapshot, self.method, self.endpoint, self.app_path)
        fields = parse_fields(self.query, bytes(self.body), self.headers)
        token = bearer_token(self.headers)
        record.flow = flow = choose_flow(self.endpoint, token, fields)
        status, payload = await run_flow(self.gateway, snapshot, record, record.app, app, flow, fields, token)
        self.send(status, b"" if payload is None else dumps(payload), _ANSWER_HEADERS if payload is not None else {})

    def time_out(self) -> None:
        if not self.answered and self.task is not None:
            self.timed_out = True
            self.task.cancel()

    def timeout_error(self) -> GatewayError:
        ctx = self.record.ctx
        if ctx is None or not ctx.timings:
            return PipelineTimeout(log_detail="timed out before the pipeline started")
        ctx.failed_step = next(reversed(ctx.timings))
        error = PipelineTimeout(log_detail=f"timed out in step {ctx.failed_step}")
        notify_step_failed(self.gateway, ctx, self.record.app, error)
        return error

    # -- answering ---------------------------------------------------------------------

    def fail(self, error: GatewayError) -> None:
        self.record.error = error
        ctx = self.record.ctx
        # resending cannot succeed once a step spent something single-use (a code)
        retryable = error.retryable and not (ctx is not None and ctx.single_use_spent)
        allow = ALLOWED_METHODS[self.endpoint] if isinstance(error, MethodNotAllowed) else None
        answer = render_error(error, retryable=retryable, allow=allow)
        self.send(answer.status, answer.body, answer.headers)

    def send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        if self.answered:
            return
        self.answered = True
        if self.hold:
            self.held = (status, body, headers)  # written by finish()
        else:
            self.write(status, body, headers)

    def write(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        _bodies.arrived(self)  # e.g. a 413 while the body was arriving
        write_answer(self.connection, self.method, status, body, headers, self.record.request_id, self.read_done)
        record_request(self.gateway, self.record, status)
