"""The body rules of the flow path hold on every path: /healthz, /metrics, unknown paths and
the mounted sandbox refuse a declared oversized body before it is sent, a chunked one as
soon as it passes the limit, and a stalled body with 408; a request's line and headers
must arrive within server.header_timeout on a real `wxgate serve`.

What is measured is what the server did with the bytes (answered before any body byte
was sent, how many it took before refusing), not how long it took."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.testing import GatewayTestCase
from tests.helpers import ROOT, WXGATE, start_on_a_free_port
from tests.test_http_path import Connection, Reply, answer_and_close

LIMIT = 2048
CONFIG = f"""
server: {{max_body_bytes: {LIMIT}, request_timeout: 0.3}}
storage: {{plugin: memory}}
apps:
  demo: {{appid: wx0000000000demo0, secret: demo-secret-123, upstream: sandbox}}
"""
PATHS = ["/healthz", "/readyz", "/metrics", "/openapi.json", "/nowhere", "/_sandbox/demo/wx.login"]


def head(path: str, *lines: str) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n" + "".join(
        line + "\r\n" for line in lines
    ) + "\r\n").encode()  # fmt: skip


class EveryPathTest(GatewayTestCase):
    config_text = CONFIG

    def assert_error(self, reply: Reply, status: int, code: str) -> None:
        assert (reply.status, reply.json()["error"]["code"]) == (status, code)
        assert reply.headers["content-type"].startswith("application/json")
        assert reply.headers["connection"] == "close"
        assert "server" not in reply.headers

    def test_a_declared_body_over_the_limit_is_refused_before_it_is_sent(self) -> None:
        for path in PATHS:
            # only the headers go out: the answer comes without a byte of the 95 MB
            reply, closed = answer_and_close(self, head(path, f"Content-Length: {95 * 1024 * 1024}"))
            self.assert_error(reply, 413, "body_too_large")
            assert closed, path

    def test_a_chunked_body_is_refused_once_past_the_limit(self) -> None:
        for path in PATHS:

            async def go(path: str = path) -> tuple[Reply, int]:
                conn = await Connection.open(self.get_http_port())
                sent = 0
                try:
                    conn.writer.write(head(path, "Transfer-Encoding: chunked"))
                    chunk = b"x" * 512
                    for _ in range(64):  # 32 KiB offered, 2 KiB allowed
                        conn.writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        await conn.writer.drain()
                        sent += len(chunk)
                        await asyncio.sleep(0.01)
                        if conn.reader.at_eof() or len(conn.reader._buffer):  # type: ignore[attr-defined]
                            break
                    return await conn.read(), sent
                finally:
                    conn.close()

            reply, sent = self.io_loop.run_sync(go, timeout=10)
            self.assert_error(reply, 413, "body_too_large")
            assert sent <= LIMIT + 4 * 512, (path, sent)  # answered soon after the limit, not at the end

    def test_a_stalled_body_gets_408(self) -> None:
        for path in ["/healthz", "/nowhere", "/_sandbox/demo/wx.login"]:
            reply, closed = answer_and_close(self, head(path, "Content-Length: 20") + b'{"us')
            self.assert_error(reply, 408, "body_timeout")
            assert closed

    def test_a_body_within_the_limit_still_reaches_the_handler(self) -> None:
        status, body, response = self.call("/_sandbox/demo/wx.login", {"user": "ann", "pad": "x" * (LIMIT - 100)})
        assert status == 200, body
        assert "Server" not in response.headers
        status, body, response = self.call("/nowhere", method="GET")
        assert (status, body["error"]["code"]) == (404, "not_found")
        assert "Server" not in response.headers
        status, _, response = self.call("/healthz", method="GET")
        assert status == 200
        assert "Server" not in response.headers


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[int, subprocess.Popen[str]]]:
    config = tmp_path / "gw.yaml"
    config.write_text(CONFIG.replace("request_timeout: 0.3}", "request_timeout: 0.3, header_timeout: 0.5}"))
    log = tmp_path / "gateway.log"  # read only if it exits at start

    def start(port: int) -> subprocess.Popen[str]:
        with log.open("w") as out:
            return subprocess.Popen(
                [WXGATE, "serve", "--config", str(config), "--port", str(port)],
                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, text=True, start_new_session=True,
            )  # fmt: skip

    proc, port, _ = start_on_a_free_port(start, output=lambda _: log.read_text())
    yield port, proc
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=20)


def read_answer(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_headers_that_do_not_arrive_in_time_close_the_connection(served: tuple[int, subprocess.Popen[str]]) -> None:
    port, _ = served
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")  # and nothing more
        started = time.monotonic()
        assert sock.recv(1) == b""  # closed by the server, without an answer
        assert time.monotonic() - started < 9  # the header deadline (0.5 s), not the idle one (75 s)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        assert sock.recv(1) == b""  # a connection that sends nothing at all goes the same way


def test_a_kept_alive_connection_may_idle_longer_than_the_header_deadline(
    served: tuple[int, subprocess.Popen[str]],
) -> None:
    port, _ = served
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        assert read_answer(sock).startswith(b"HTTP/1.1 200")
        time.sleep(1.0)  # twice the header deadline, idle between two requests
        sock.sendall(request)
        answer = read_answer(sock)
        assert answer.startswith(b"HTTP/1.1 200")
        assert b"\r\nServer:" not in answer
