"""The HTTP/1 wire under the lean flow path: framing checks, body deadlines, the Date
header, a context of its own for each request's coroutine, and writing an answer.

Nothing here knows about flows or fields; :mod:`gateway.flow_request` wires it to them.
"""

from __future__ import annotations

import asyncio
import contextvars
import re
import time
from collections.abc import Coroutine, Generator
from http.client import responses
from typing import Any, Protocol

import tornado.httputil
from tornado.http1connection import is_transfer_encoding_chunked, parse_int
from tornado.iostream import StreamClosedError

from gateway.errors import BodyTooLarge, GatewayError, InvalidField

# Tornado's Host rule (tornado.httputil's RFC 3986 host ABNF, simplified as Tornado does:
# brackets and colons anywhere), so that a Host Tornado would refuse is refused here first.
_URI_HOST = r"(?:[\[\]:]|[A-Za-z0-9\-._~]|[!$&'()*+,;=]|%[0-9A-Fa-f]{2})*"
_HOST = re.compile(rf"{_URI_HOST}(?::[0-9]*)?")
# Tornado splits duplicated Content-Lengths on this (http1connection._read_body)
_LENGTHS = re.compile(r",[ \t]*")


def framing_refusal(version: str, headers: tornado.httputil.HTTPHeaders, limit: int) -> tuple[GatewayError | None, int]:
    """What Tornado would refuse with a bare 400 (its reader and HTTPServerRequest, rule for
    rule), refused first with our JSON error; and a declared body over ``limit`` (413).
    Returns the refusal, if any, and the body length the headers declare (0 when none)."""
    host = headers.get("Host")  # several Host lines arrive joined with ','
    if host is None:
        if version != "HTTP/1.0":
            return InvalidField("The Host header is missing or malformed."), 0
    elif "," in host or not _HOST.fullmatch(host):
        return InvalidField("The Host header is missing or malformed."), 0
    expected = 0
    declared = headers.get("Content-Length")
    if declared is not None:
        if "," in declared:
            pieces = _LENGTHS.split(declared)
            if any(piece != pieces[0] for piece in pieces):
                return InvalidField("The Content-Length header is malformed."), 0
            declared = pieces[0]
        try:
            expected = parse_int(declared)
        except ValueError:
            return InvalidField("The Content-Length header is malformed."), 0
    try:
        is_transfer_encoding_chunked(headers)
    except tornado.httputil.HTTPInputError:
        return InvalidField("The body's framing is malformed (Transfer-Encoding)."), 0
    if expected > limit:
        return BodyTooLarge.over(limit), expected
    return None, expected


class _Waiting(Protocol):
    def body_timed_out(self) -> None: ...


class BodyDeadlines:
    """Requests whose body is still arriving, checked once a second. Most bodies come
    with their headers; a timer per request would cost more than this dictionary."""

    def __init__(self) -> None:
        self.waiting: dict[_Waiting, float] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self.sweeping = False

    def wait_for(self, request: _Waiting, deadline: float) -> None:
        self.waiting[request] = deadline
        loop = asyncio.get_running_loop()
        if not self.sweeping or loop is not self.loop:  # (a test runs each case on a new loop)
            self.loop, self.sweeping = loop, True
            loop.call_later(1.0, self.sweep, loop)

    def arrived(self, request: _Waiting) -> None:
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


class HTTPDate:
    """The Date header, formatted once per second rather than once per request."""

    second = -1
    text = ""

    @classmethod
    def now(cls) -> str:
        second = int(time.time())
        if second != cls.second:
            cls.second, cls.text = second, tornado.httputil.format_timestamp(second)
        return cls.text


class InContext:
    """Awaits a coroutine in a context of its own (``contextvars``), without a task.

    A task per request would give each its own copy of the context variables, and cost
    what the flow path saves by running in the connection's task. This drives the
    coroutine as a task would (what it awaits is passed up to the connection's task,
    cancellation and errors are passed down) with every step run in ``context``: a
    variable a step sets is not seen by the next request on the connection."""

    __slots__ = ("context", "coro")

    def __init__(self, coro: Coroutine[Any, Any, None], context: contextvars.Context | None = None) -> None:
        self.coro = coro
        self.context = context if context is not None else contextvars.copy_context()

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


def write_answer(
    connection: tornado.httputil.HTTPConnection,
    method: str,
    status: int,
    body: bytes,
    headers: dict[str, str],
    request_id: str,
    read_done: bool,
) -> None:
    """One whole answer. A 204 has neither a body nor a Content-Length (RFC 9110); a HEAD
    gets the length without the body. ``read_done`` False: answered before the whole
    request was read (413, 408, bad framing), so Tornado will close the connection rather
    than read the rest, and the answer says so."""
    out = tornado.httputil.HTTPHeaders(headers)
    if status != 204:
        out["Content-Length"] = str(len(body))
    out["Date"] = HTTPDate.now()
    out["X-Request-Id"] = request_id
    if not read_done:
        out["Connection"] = "close"
    start_line = tornado.httputil.ResponseStartLine("HTTP/1.1", status, responses.get(status, "Unknown"))
    try:
        connection.write_headers(start_line, out, None if method == "HEAD" or not body else body)
        connection.finish()
    except StreamClosedError:
        pass  # the client left; the caller still records the request
