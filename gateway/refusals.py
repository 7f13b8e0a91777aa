"""Requests Tornado refuses while parsing them (e.g. a query of more than 1,000 fields,
its guard against parsing costs) still get wxgate's JSON error body."""

from __future__ import annotations

import tornado.httputil

from gateway.error_response import render_error
from gateway.errors import InvalidField
from gateway.logs import get_logger
from gateway.request_record import new_request_id
from gateway.wire import write_answer


def refuse(
    connection: tornado.httputil.HTTPConnection,
    start_line: tornado.httputil.RequestStartLine | tornado.httputil.ResponseStartLine,
    exc: tornado.httputil.HTTPInputError,
) -> None:
    """Answer 400 ``invalid_field``, log the access event, and close the connection."""
    error = InvalidField("The request could not be parsed.", log_detail=str(exc))
    answer = render_error(error)
    request_id = new_request_id()
    path = start_line.path.partition("?")[0] if isinstance(start_line, tornado.httputil.RequestStartLine) else ""
    get_logger("wxgate.access").info(
        "request", request_id=request_id, path=path, status=error.status, error=error.code, detail=str(exc)
    )
    method = getattr(start_line, "method", "")  # HEAD: the length, not the body
    write_answer(connection, method, answer.status, answer.body, answer.headers, request_id, read_done=False)
