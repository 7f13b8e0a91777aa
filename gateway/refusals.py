"""Requests Tornado refuses while parsing them (e.g. a query of more than 1,000 fields,
its guard against parsing costs) still get wxgate's JSON error body."""

from __future__ import annotations

import json

import tornado.httputil

from gateway.errors import InvalidField
from gateway.logs import get_logger
from gateway.request_record import new_request_id


def refuse(
    connection: tornado.httputil.HTTPConnection,
    start_line: tornado.httputil.RequestStartLine | tornado.httputil.ResponseStartLine,
    exc: tornado.httputil.HTTPInputError,
) -> None:
    """Answer 400 ``invalid_field``, log the access event, and close the connection."""
    error = InvalidField("The request could not be parsed.", log_detail=str(exc))
    body = json.dumps(error.body(), separators=(",", ":")).encode()
    request_id = new_request_id()
    path = start_line.path.partition("?")[0] if isinstance(start_line, tornado.httputil.RequestStartLine) else ""
    get_logger("wxgate.access").info(
        "request", request_id=request_id, path=path, status=error.status, error=error.code, detail=str(exc)
    )
    connection.write_headers(
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
        None if getattr(start_line, "method", "") == "HEAD" else body,  # HEAD: the length, not the body
    )
    connection.finish()
