"""Framing headers: whatever Tornado's HTTP/1 reader refuses, wxgate refuses first with
its JSON error, and what Tornado accepts, wxgate does not refuse for its framing.

A plain Tornado server is the reference: the same raw request goes to it and to a
gateway, over real sockets. Tornado's own refusal is a bare ``400 Bad Request`` with no
body; wxgate's must be the JSON error with a request id, so a client never meets an
answer without one.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import tornado.httpserver
import tornado.netutil
import tornado.web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tornado.http1connection import parse_int
from tornado.iostream import StreamClosedError
from tornado.tcpclient import TCPClient

from gateway.testing import GatewayTestCase

FRAMING_MESSAGES = (
    "The Host header is missing or malformed.",
    "The Content-Length header is malformed.",
    "The body's framing is malformed (Transfer-Encoding).",
)
# Bodies small enough to arrive with the headers in one read: a server that refuses
# early then has nothing unread, and closes without a reset that would lose its answer.
MAX_BODY = 64


class _Accept(tornado.web.RequestHandler):
    def post(self) -> None:
        self.write("accepted")


def _declared_length(value: str) -> int | None:
    """The body length Tornado reads for this Content-Length, or None when it refuses it."""
    value = value.strip(" \t")  # as HTTPHeaders.parse leaves a header value
    if "," in value:
        pieces = re.split(r",[ \t]*", value)
        if any(piece != pieces[0] for piece in pieces):
            return None
        value = pieces[0]
    try:
        return parse_int(value)
    except ValueError:
        return None


lengths = st.one_of(
    st.text(alphabet="0123456789 ,\t+-x", max_size=8).filter(lambda v: (_declared_length(v) or 0) <= MAX_BODY),
    st.integers(0, MAX_BODY).map(str),
    st.integers(0, MAX_BODY).flatmap(
        lambda n: st.sampled_from([f"{n},{n}", f"{n}, {n}", f"{n} ,{n}", f"{n},\t{n}", f"{n}, {n + 1}"])
    ),
)
hosts = st.one_of(
    st.none(),
    st.sampled_from(["localhost", "127.0.0.1:8080", "[::1]:80", "", "a,b", "a b", "ex%41mple", "a@b", "h:x"]),
    st.text(alphabet="abc09.:[]%,@!_~- ", max_size=10),
)
transfer = st.one_of(st.none(), st.sampled_from(["chunked", "Chunked", "gzip", "chunked, gzip", "identity", ""]))


class FramingTest(GatewayTestCase):
    def setUp(self) -> None:
        super().setUp()
        sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
        self.reference = tornado.httpserver.HTTPServer(tornado.web.Application([(r"/.*", _Accept)]))
        self.reference.add_sockets(sockets)
        self.reference_port = sockets[0].getsockname()[1]

    def tearDown(self) -> None:
        self.reference.stop()
        super().tearDown()

    def exchange(self, port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
        async def go() -> bytes:
            stream = await TCPClient().connect("127.0.0.1", port)
            await stream.write(raw)
            return await asyncio.wait_for(stream.read_until_close(), 5)

        try:
            data = self.io_loop.run_sync(go)
        except StreamClosedError as exc:
            which = "reference" if port == self.reference_port else "gateway"
            raise AssertionError(f"{which} closed: {exc.real_error!r} for {raw!r}") from exc
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
        return int(lines[0].split(" ")[1]), headers, body

    def request(self, host: str | None, length: str | None, encoding: str | None) -> bytes:
        lines = ["POST /v1/demo/login HTTP/1.1"]
        if host is not None:
            lines.append(f"Host: {host}")
        if length is not None:
            lines.append(f"Content-Length: {length}")
        if encoding is not None:
            lines.append(f"Transfer-Encoding: {encoding}")
        lines.append("Connection: close")
        declared = _declared_length(length) if length is not None else None
        if encoding is not None and length is None and encoding.lower() == "chunked":
            body = b"0\r\n\r\n"
        elif declared is not None and declared >= 2:
            body = b"{" + b" " * (declared - 2) + b"}"
        else:
            body = b" " * (declared or 0)
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    def check(self, host: str | None, length: str | None, encoding: str | None) -> None:
        raw = self.request(host, length, encoding)
        ref_status, _, ref_body = self.exchange(self.reference_port, raw)
        status, headers, body = self.exchange(self.get_http_port(), raw)
        assert headers.get("X-Request-Id"), (raw, status, body)  # never Tornado's bare answer
        answer: dict[str, Any] = json.loads(body)
        message = answer.get("error", {}).get("message")
        if ref_status == 400 and ref_body == b"":
            assert status == 400, (raw, status, body)
            assert answer["error"]["code"] == "invalid_field", (raw, body)
            assert message in FRAMING_MESSAGES, (raw, body)
        else:
            assert ref_status == 200, (raw, ref_status, ref_body)
            assert message not in FRAMING_MESSAGES, (raw, body)

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(host=hosts, length=lengths, encoding=transfer)
    def test_tornado_refusals_are_refused_first_with_the_json_error(
        self, host: str | None, length: str, encoding: str | None
    ) -> None:
        self.check(host, length if encoding is None or length else None, encoding)

    def test_the_values_that_once_slipped_through(self) -> None:
        # "5 ,5" passed the old check and then got Tornado's bare 400
        for length in ("5 ,5", "5,5", "5, 5", "5,\t5", "x", "5 , 5", " 5"):
            self.check("localhost", length, None)
        self.check("", "0", None)  # Tornado accepts an empty Host
        self.check("a,b", "0", None)
        self.check(None, "0", None)
