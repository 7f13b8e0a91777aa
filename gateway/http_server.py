"""Tornado's HTTPServer with a header deadline of its own.

Tornado has one setting for two waits: ``idle_connection_timeout`` bounds both how long
a kept-alive connection may sit idle and how long a request line and headers may take to
arrive. A proxy keeps idle connections to its upstream for a minute or more (closing them
sooner loses requests it sends as the close happens), while a client that opens a
connection and trickles its headers should be dropped within seconds. Here a new
connection's first request gets ``header_timeout``; a later request on a kept-alive
connection gets ``idle_timeout`` for its idle wait and headers together (it already
proved itself with a whole request). Bodies are bounded by :mod:`gateway.front`.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from tornado import iostream
from tornado.http1connection import HTTP1Connection, HTTP1ConnectionParameters, HTTP1ServerConnection
from tornado.httpserver import HTTPServer, _HTTPRequestContext
from tornado.httputil import HTTPServerConnectionDelegate
from tornado.log import gen_log


class GatewayHTTPServer(HTTPServer):
    def initialize(self, *args: Any, header_timeout: float, idle_timeout: float, **kwargs: Any) -> None:  # type: ignore[override]
        kwargs["idle_connection_timeout"] = idle_timeout
        super().initialize(*args, **kwargs)
        self.first_params = copy.copy(self.conn_params)
        self.first_params.header_timeout = header_timeout

    def handle_stream(self, stream: iostream.IOStream, address: tuple[Any, ...]) -> None:
        context = _HTTPRequestContext(stream, address, self.protocol, self.trusted_downstream)
        conn = _Connection(stream, self.conn_params, context, self.first_params)
        self._connections.add(conn)
        conn.start_serving(self)


class _Connection(HTTP1ServerConnection):
    def __init__(
        self,
        stream: iostream.IOStream,
        params: HTTP1ConnectionParameters,
        context: object,
        first_params: HTTP1ConnectionParameters,
    ) -> None:
        super().__init__(stream, params, context)
        self.first_params = first_params

    async def _server_request_loop(self, delegate: HTTPServerConnectionDelegate) -> None:
        # Tornado's loop (tornado.http1connection, 6.x), but for the parameters of the first request
        params = self.first_params
        try:
            while True:
                conn = HTTP1Connection(self.stream, False, params, self.context)
                params = self.params
                request_delegate = delegate.start_request(self, conn)
                try:
                    ret = await conn.read_response(request_delegate)
                except (iostream.StreamClosedError, iostream.UnsatisfiableReadError, asyncio.CancelledError):
                    return
                except Exception:
                    gen_log.error("Uncaught exception", exc_info=True)
                    conn.close()
                    return
                if not ret:
                    return
                await asyncio.sleep(0)
        finally:
            delegate.on_close(self)
