"""Requests Tornado refuses before any handler exists (e.g. a query of more than 1,000
fields, its guard against parsing costs) still get wxgate's JSON error body."""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable

import tornado.httputil
import tornado.web

from gateway.errors import InvalidField
from gateway.logs import get_logger


class _GuardedDelegate(tornado.httputil.HTTPMessageDelegate):
    def __init__(self, inner: tornado.httputil.HTTPMessageDelegate, connection: tornado.httputil.HTTPConnection):
        self.inner = inner
        self.connection = connection
        self.refused = False

    def headers_received(
        self,
        start_line: tornado.httputil.RequestStartLine | tornado.httputil.ResponseStartLine,
        headers: tornado.httputil.HTTPHeaders,
    ) -> Awaitable[None] | None:
        try:
            return self.inner.headers_received(start_line, headers)
        except tornado.httputil.HTTPInputError as exc:
            self.refused = True
            error = InvalidField("The request could not be parsed.", log_detail=str(exc))
            body = json.dumps(error.body(), separators=(",", ":")).encode()
            request_id = os.urandom(16).hex()
            path = (
                start_line.path.partition("?")[0] if isinstance(start_line, tornado.httputil.RequestStartLine) else ""
            )
            get_logger("wxgate.access").info(
                "request", request_id=request_id, path=path, status=error.status, error=error.code, detail=str(exc)
            )
            self.connection.write_headers(
                tornado.httputil.ResponseStartLine("HTTP/1.1", error.status, "Bad Request"),
                tornado.httputil.HTTPHeaders(
                    {
                        "Content-Type": "application/json; charset=utf-8",
                        "Cache-Control": "no-store",
                        "Content-Length": str(len(body)),
                        "X-Request-Id": request_id,
                        "Connection": "close",
                    }
                ),
                body,
            )
            self.connection.finish()
            return None

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        return None if self.refused else self.inner.data_received(chunk)

    def finish(self) -> None:
        if not self.refused:
            self.inner.finish()

    def on_connection_close(self) -> None:
        if not self.refused:
            self.inner.on_connection_close()


class GatewayApplication(tornado.web.Application):
    def start_request(
        self, server_conn: object, request_conn: tornado.httputil.HTTPConnection
    ) -> tornado.httputil.HTTPMessageDelegate:
        return _GuardedDelegate(super().start_request(server_conn, request_conn), request_conn)
