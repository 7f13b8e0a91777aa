"""The front of every request: its start line decides where it goes.

Flow URLs (``/v1/{app}/{endpoint}`` for the endpoints of :data:`gateway.flows.ALLOWED_METHODS`)
go to :class:`~gateway.flow_request.FlowRequest`,
the lean hot path; everything else (health, readiness, metrics, the OpenAPI document,
the sandbox, 404s) to ``tornado.web``'s router and :mod:`gateway.handlers`. A request
Tornado refuses while parsing it gets the JSON error from :mod:`gateway.refusals`.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import tornado.httputil
import tornado.web

from gateway.flow_request import FlowRequest
from gateway.flows import ALLOWED_METHODS
from gateway.refusals import refuse

if TYPE_CHECKING:
    from gateway.runtime import Gateway

FLOW_PATH = re.compile(rf"/v1/([^/?]+)/({'|'.join(ALLOWED_METHODS)})(?:\?|$)")


class _FrontDelegate(tornado.httputil.HTTPMessageDelegate):
    def __init__(
        self, application: GatewayApplication, server_conn: object, connection: tornado.httputil.HTTPConnection
    ) -> None:
        self.application = application
        self.server_conn = server_conn
        self.connection = connection
        self.inner: tornado.httputil.HTTPMessageDelegate | None = None
        self.refused = False

    def headers_received(
        self,
        start_line: tornado.httputil.RequestStartLine | tornado.httputil.ResponseStartLine,
        headers: tornado.httputil.HTTPHeaders,
    ) -> Awaitable[None] | None:
        assert isinstance(start_line, tornado.httputil.RequestStartLine)  # a server only reads requests
        match = FLOW_PATH.match(start_line.path)
        if match is not None:
            self.inner = FlowRequest(
                self.application.gateway, self.connection, start_line, headers, match.group(1), match.group(2)
            )
        else:
            self.inner = tornado.web.Application.start_request(self.application, self.server_conn, self.connection)
        try:
            return self.inner.headers_received(start_line, headers)
        except tornado.httputil.HTTPInputError as exc:
            self.refused = True
            refuse(self.connection, start_line, exc)
            return None

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        if self.refused or self.inner is None:
            return None
        return self.inner.data_received(chunk)

    def finish(self) -> None:
        if not self.refused and self.inner is not None:
            self.inner.finish()

    def on_connection_close(self) -> None:
        if not self.refused and self.inner is not None:
            self.inner.on_connection_close()


class GatewayApplication(tornado.web.Application):
    def __init__(self, gateway: Gateway, *args: Any, **settings: Any) -> None:
        super().__init__(*args, **settings)
        self.gateway = gateway

    def start_request(
        self, server_conn: object, request_conn: tornado.httputil.HTTPConnection
    ) -> tornado.httputil.HTTPMessageDelegate:
        return _FrontDelegate(self, server_conn, request_conn)
