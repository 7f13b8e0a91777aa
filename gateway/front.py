"""The front of every request: its start line decides where it goes.

Flow URLs (``/v1/{app}/{endpoint}`` for the endpoints of :data:`gateway.flows.ALLOWED_METHODS`)
go to :class:`~gateway.flow_request.FlowRequest`,
the lean hot path; everything else (health, readiness, metrics, the OpenAPI document,
the sandbox, 404s) to ``tornado.web``'s router and :mod:`gateway.handlers`. A request
Tornado refuses while parsing it gets the JSON error from :mod:`gateway.refusals`.

Every path gets the flow path's body rules: a declared body over ``server.max_body_bytes``
is refused before it is sent, a chunked one as soon as it grows past the limit, and a
body still arriving after ``server.request_timeout`` is answered 408 (Tornado itself
would buffer up to 100 MB, with no deadline, before a handler could look).
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable
from time import perf_counter
from typing import TYPE_CHECKING, Any

import tornado.httputil
import tornado.web

from gateway.error_response import render_error
from gateway.errors import BodyTimeout, BodyTooLarge, GatewayError
from gateway.flow_request import FlowRequest
from gateway.flows import ALLOWED_METHODS
from gateway.refusals import refuse
from gateway.request_record import RequestRecord, record_request, request_id_from
from gateway.wire import BodyDeadlines, framing_refusal, write_answer

if TYPE_CHECKING:
    from gateway.runtime import Gateway

FLOW_PATH = re.compile(rf"/v1/([^/?]+)/({'|'.join(ALLOWED_METHODS)})(?:\?|$)")
# With an admin listener (server.admin) these are served there, and nowhere on the public port.
OPERATIONS_ROUTES = frozenset({r"/healthz$", r"/readyz$", r"/metrics$"})

_bodies = BodyDeadlines()


class _FrontDelegate(tornado.httputil.HTTPMessageDelegate):
    def __init__(
        self, application: GatewayApplication, server_conn: object, connection: tornado.httputil.HTTPConnection
    ) -> None:
        self.application = application
        self.server_conn = server_conn
        self.connection = connection
        self.inner: tornado.httputil.HTTPMessageDelegate | None = None
        self.refused = False
        self.start_line: tornado.httputil.RequestStartLine | None = None
        self.headers: tornado.httputil.HTTPHeaders | None = None
        self.received = 0
        self.read_done = False
        self.started = perf_counter()

    def headers_received(
        self,
        start_line: tornado.httputil.RequestStartLine | tornado.httputil.ResponseStartLine,
        headers: tornado.httputil.HTTPHeaders,
    ) -> Awaitable[None] | None:
        assert isinstance(start_line, tornado.httputil.RequestStartLine)  # a server only reads requests
        gateway = self.application.gateway
        match = FLOW_PATH.match(start_line.path) if self.application.serves_flows else None
        if match is not None:
            self.inner = FlowRequest(gateway, self.connection, start_line, headers, match.group(1), match.group(2))
        else:
            self.start_line, self.headers = start_line, headers
            server = gateway.current.config.server
            refusal, expected = framing_refusal(start_line.version, headers, server.max_body_bytes)
            if refusal is not None:
                self.answer_early(refusal)
                return None
            if expected or "Transfer-Encoding" in headers:
                _bodies.wait_for(self, time.monotonic() + server.request_timeout)
            self.inner = tornado.web.Application.start_request(self.application, self.server_conn, self.connection)
        try:
            return self.inner.headers_received(start_line, headers)
        except tornado.httputil.HTTPInputError as exc:
            self.refused = True
            _bodies.arrived(self)
            refuse(self.connection, start_line, exc)
            return None

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        if self.refused or self.inner is None:
            return None
        if self.start_line is not None:  # not a flow: count what Tornado would buffer
            self.received += len(chunk)
            limit = self.application.gateway.current.config.server.max_body_bytes
            if self.received > limit:
                self.answer_early(BodyTooLarge.over(limit))
                return None
        return self.inner.data_received(chunk)

    def finish(self) -> None:
        self.read_done = True
        _bodies.arrived(self)
        if not self.refused and self.inner is not None:
            self.inner.finish()

    def on_connection_close(self) -> None:
        _bodies.arrived(self)
        if not self.refused and self.inner is not None:
            self.inner.on_connection_close()

    def body_timed_out(self) -> None:
        if not self.refused and not self.read_done:
            self.answer_early(BodyTimeout(log_detail=f"{self.received} bytes received"))

    def answer_early(self, error: GatewayError) -> None:
        """Before the whole request was read (bad framing, 413, 408): the JSON error, one
        access event, and the connection closes rather than read the rest."""
        assert self.start_line is not None
        assert self.headers is not None
        self.refused = True
        _bodies.arrived(self)
        gateway = self.application.gateway
        peer = getattr(self.connection.context, "remote_ip", "") or ""  # type: ignore[attr-defined]
        record = RequestRecord(
            request_id=request_id_from(self.headers.get("X-Request-Id")),
            method=self.start_line.method,
            path=self.start_line.path.partition("?")[0],
            client_ip=gateway.proxies.client_address(peer, self.headers),
            started=self.started,
            error=error,
        )
        answer = render_error(error)
        write_answer(
            self.connection, record.method, answer.status, answer.body, answer.headers, record.request_id, False
        )
        record_request(gateway, record, answer.status)


class _NoServerHeader(tornado.web.OutputTransform):
    """No ``Server: TornadoServer/x.y`` (tornado.web sets it on every answer): the
    version helps only whoever looks for a known hole."""

    def transform_first_chunk(
        self, status_code: int, headers: tornado.httputil.HTTPHeaders, chunk: bytes, finishing: bool
    ) -> tuple[int, tornado.httputil.HTTPHeaders, bytes]:
        headers.pop("Server", None)
        return status_code, headers, chunk


class GatewayApplication(tornado.web.Application):
    """``serves_flows`` False: an application without the flow path (the admin listener)."""

    def __init__(self, gateway: Gateway, *args: Any, serves_flows: bool = True, **settings: Any) -> None:
        if serves_flows and gateway.config.server.admin is not None and args:
            # the operations endpoints live on the admin listener only
            routes = [
                r for r in args[0] if getattr(getattr(r, "regex", None), "pattern", None) not in OPERATIONS_ROUTES
            ]
            args = (routes, *args[1:])
        super().__init__(*args, **settings)
        self.add_transform(_NoServerHeader)
        self.gateway = gateway
        self.serves_flows = serves_flows

    def start_request(
        self, server_conn: object, request_conn: tornado.httputil.HTTPConnection
    ) -> tornado.httputil.HTTPMessageDelegate:
        return _FrontDelegate(self, server_conn, request_conn)
