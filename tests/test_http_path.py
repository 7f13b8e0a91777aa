"""The flow request path at the HTTP level, over a raw socket: keep-alive across every
kind of answer, chunked bodies, HEAD, early refusals, a timeout inside the connection's
own task. gateway.flow_request is a Tornado HTTPMessageDelegate, not a RequestHandler,
so what tornado.web used to guarantee is checked here."""

from __future__ import annotations

import asyncio
import json
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, ClassVar

import structlog
from pydantic import field_validator

from gateway.context import Context
from gateway.step import Step, StepOptions
from gateway.testing import GatewayTestCase
from tests.test_resilience import pipeline_timeout_config

MARK: ContextVar[str | None] = ContextVar("wxgate_test_mark", default=None)


class MarkingStep(Step[Any]):
    """Sets a context variable (and a structlog context variable), as a careless plugin
    might, and reports what it found from before."""

    name: ClassVar[str] = "marking"
    version: ClassVar[str] = "0.0.1"

    async def __call__(self, ctx: Context) -> None:
        ctx.response["seen_before"] = MARK.get()
        ctx.response["structlog_before"] = structlog.contextvars.get_contextvars().get("marked_by")
        MARK.set(ctx.request_id)
        structlog.contextvars.bind_contextvars(marked_by=ctx.request_id)
        await asyncio.sleep(0.01)  # a real suspension: the variable must survive it
        ctx.response["kept_across_await"] = MARK.get() == ctx.request_id


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Connection:
    """One client connection; answers are read by Content-Length, so a stray byte (a body
    after HEAD, say) would corrupt the next answer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def send(self, raw: bytes, *, head: bool = False) -> Reply:
        self.writer.write(raw)
        await self.writer.drain()
        return await self.read(head=head)

    async def read(self, *, head: bool = False) -> Reply:
        block = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 5)
        status_line, *lines = block.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        length = 0 if head else int(headers.get("content-length", "0"))
        body = await asyncio.wait_for(self.reader.readexactly(length), 5)
        return Reply(int(status_line.split()[1]), headers, body)

    async def closed_by_server(self) -> bool:
        return await asyncio.wait_for(self.reader.read(1), 5) == b""

    def close(self) -> None:
        self.writer.close()


def request(method: str, path: str, body: bytes | None = None, **headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


def chunked(method: str, path: str, parts: list[bytes]) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    head += "Transfer-Encoding: chunked\r\n\r\n"
    return head.encode() + b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


def exchange(test: GatewayTestCase, raws: list[bytes], timeout: float = 5) -> list[Reply]:
    """Send each request on one connection, each after the answer to the one before."""

    async def go() -> list[Reply]:
        conn = await Connection.open(test.get_http_port())
        try:
            return [await conn.send(raw, head=raw.startswith(b"HEAD ")) for raw in raws]
        finally:
            conn.close()

    replies: list[Reply] = test.io_loop.run_sync(go, timeout=timeout)
    return replies


def answer_and_close(test: GatewayTestCase, raw: bytes, *, closes: bool = True) -> tuple[Reply, bool]:
    """Write ``raw`` (a request, or the start of one), read the answer, and tell whether
    the server then closed the connection (only asked when ``closes``)."""

    async def go() -> tuple[Reply, bool]:
        conn = await Connection.open(test.get_http_port())
        try:
            conn.writer.write(raw)
            reply = await conn.read(head=raw.startswith(b"HEAD "))
            return reply, closes and await conn.closed_by_server()
        finally:
            conn.close()

    result: tuple[Reply, bool] = test.io_loop.run_sync(go)
    return result


def login_config(steps: str, *extra_steps: type[Step[Any]]) -> Any:
    """An app whose login pipeline is ``steps`` (YAML), with these test steps installed."""
    from gateway.config import parse_config
    from gateway.registry import Registry

    text = f"""
storage: {{plugin: memory}}
pipelines:
  login: {steps}
apps:
  demo: {{appid: wx0000000000demo0, secret: demo-secret-123, upstream: sandbox}}
"""
    registry = Registry.discover(extra_steps={step.name: step for step in extra_steps})
    return parse_config(text, "<test steps>", registry)


class KeepAliveTest(GatewayTestCase):
    def test_one_connection_carries_every_kind_of_answer(self) -> None:
        code = self.wx_login("keepalive")
        replies = exchange(
            self,
            [
                request("POST", "/v1/demo/login", json.dumps({"code": code}).encode(), Content_Type="application/json"),
                request("POST", "/v1/demo/login", b"{not json", Content_Type="application/json"),
                request("GET", "/v1/demo/login"),  # no body: the flow runs from the headers
                request("POST", "/v1/demo/phone", b"{}", Content_Type="application/json"),
                request("HEAD", "/v1/demo/login"),
                request("GET", "/healthz"),  # tornado.web's side of the front
                request("POST", "/v1/nosuchapp/login", b"{}"),
            ],
        )
        assert [r.status for r in replies] == [200, 400, 405, 401, 405, 200, 404]
        assert replies[0].json()["token"]
        assert [r.json()["error"]["code"] for r in replies[1:4]] == [
            "invalid_json",
            "method_not_allowed",
            "session_required",
        ]
        for reply in replies:
            assert reply.headers.get("connection", "").lower() != "close", reply
            assert reply.headers["x-request-id"]
        assert len({r.headers["x-request-id"] for r in replies}) == len(replies)
        assert int(replies[4].headers["content-length"]) > 0  # HEAD: the length of the body not sent

    def test_pipelined_requests_are_answered_in_order(self) -> None:
        """Two requests in one write, the second sent before the first is answered."""
        first = request("POST", "/v1/demo/login", b"{}", Content_Type="application/json", X_Request_Id="first")
        second = request("GET", "/v1/demo/login", X_Request_Id="second")

        async def go() -> list[Reply]:
            conn = await Connection.open(self.get_http_port())
            try:
                conn.writer.write(first + second)
                return [await conn.read(), await conn.read()]
            finally:
                conn.close()

        replies = self.io_loop.run_sync(go)
        assert [(r.status, r.headers["x-request-id"]) for r in replies] == [(400, "first"), (405, "second")]

    def test_chunked_body_is_read_whole_then_answered(self) -> None:
        code = self.wx_login("chunked")
        body = json.dumps({"code": code}).encode()
        replies = exchange(
            self,
            [
                chunked("POST", "/v1/demo/login", [body[:5], body[5:]]),
                request("POST", "/v1/demo/login", b"{}", Content_Type="application/json"),
            ],
        )
        assert replies[0].status == 200, replies[0]
        assert replies[0].json()["openid"]
        assert (replies[1].status, replies[1].json()["error"]["code"]) == (400, "missing_field")

    def test_a_body_over_the_limit_is_refused_at_once_and_the_connection_closed(self) -> None:
        limit = self.config.server.max_body_bytes
        # no length declared, sent beyond the limit: refused as the bytes arrive
        reply, closed = answer_and_close(self, chunked("POST", "/v1/demo/login", [b"x" * (limit + 1)]))
        assert (reply.status, reply.json()["error"]["code"]) == (413, "body_too_large")
        assert closed  # the rest of the body is not read: the connection cannot be reused

    def test_request_id_from_client_is_echoed_on_the_lean_path(self) -> None:
        [reply] = exchange(self, [request("POST", "/v1/demo/login", b"{}", X_Request_Id="abc-123")])
        assert reply.headers["x-request-id"] == "abc-123"
        assert reply.headers["cache-control"] == "no-store"
        assert reply.headers["content-type"] == "application/json; charset=utf-8"
        assert reply.headers["date"].endswith("GMT")


class TimeoutInConnectionTaskTest(GatewayTestCase):
    """The pipeline runs in the connection's task; a timeout cancels that task. The
    connection must survive it and carry the next request."""

    def get_config(self) -> Any:
        return pipeline_timeout_config()

    def test_the_connection_survives_a_pipeline_timeout(self) -> None:
        code = self.wx_login("hang-keepalive")

        first, second = exchange(
            self,
            [
                request("POST", "/v1/demo/login", json.dumps({"code": code}).encode()),
                request("POST", "/v1/demo/phone", b"{}", Authorization="Bearer x"),
            ],
            timeout=10,
        )
        assert (first.status, first.json()["error"]["code"]) == (504, "pipeline_timeout")
        assert first.headers.get("connection", "").lower() != "close"
        assert (second.status, second.json()["error"]["code"]) == (401, "session_invalid")


class ContextIsolationTest(GatewayTestCase):
    """The flow runs in the connection's task, not a task of its own: context variables
    a step sets must still not reach the next request on the same connection."""

    def get_config(self) -> Any:
        return login_config("[marking]", MarkingStep)

    def test_a_context_variable_set_by_a_step_does_not_reach_the_next_request(self) -> None:
        logins = [request("POST", "/v1/demo/login", b"{}", X_Request_Id=f"req-{i}") for i in range(3)]
        replies = exchange(self, [*logins, chunked("POST", "/v1/demo/login", [b"{}"])])  # the task path too
        assert [r.status for r in replies] == [200] * 4, replies
        for reply in replies:
            assert reply.json() == {"seen_before": None, "structlog_before": None, "kept_across_await": True}
        assert MARK.get() is None


BUILT: list[str] = []
VALIDATED: list[int] = []


class CountedOptions(StepOptions):
    weight: int = 1

    @field_validator("weight")
    @classmethod
    def _count(cls, value: int) -> int:
        VALIDATED.append(value)
        return value


class CountedStep(Step[CountedOptions]):
    """Counts how often it is built and its options validated."""

    name: ClassVar[str] = "counted"
    version: ClassVar[str] = "0.0.1"
    Options: ClassVar[type[StepOptions]] = CountedOptions

    def __init__(self, options: CountedOptions) -> None:
        super().__init__(options)
        BUILT.append(self.name)

    async def __call__(self, ctx: Context) -> None:
        ctx.response["weight"] = self.options.weight


class HotPathTest(GatewayTestCase):
    """Issue 6: pipelines, option schemas and step objects are built once, at load; a
    request only runs them, and memory does not grow with the number of requests."""

    def get_config(self) -> Any:
        return login_config("[{counted: {weight: 2}}, counted]", CountedStep)

    def send_many(self, count: int) -> list[int]:
        raw = request("POST", "/v1/demo/login", b"{}", Content_Type="application/json")
        return [reply.status for reply in exchange(self, [raw] * count, timeout=60)]

    def test_steps_and_their_options_are_built_at_load_not_per_request(self) -> None:
        built, validated = len(BUILT), len(VALIDATED)
        assert built >= 2  # the two steps of this app's pipeline, at load
        assert validated >= 2
        assert self.send_many(50) == [200] * 50
        assert (len(BUILT), len(VALIDATED)) == (built, validated)

    def test_memory_does_not_grow_with_the_number_of_requests(self) -> None:
        import gc
        import tracemalloc

        self.send_many(300)  # warm-up: caches, lazily built parts
        self.log_events.events.clear()
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.take_snapshot()
            assert self.send_many(3000) == [200] * 3000
            self.log_events.events.clear()  # the test's record of every log event, not the gateway's memory
            gc.collect()
            after = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
        # the suite's log sink keeps every line it is given: that is the test's memory, not the gateway's
        sink = [tracemalloc.Filter(False, "*/structlog/_output.py")]
        before, after = before.filter_traces(sink), after.filter_traces(sink)
        grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
        # a leak of 20 bytes a request would show as 60 kB
        assert grown < 48_000, [str(s) for s in after.compare_to(before, "lineno")[:8]]


class FramingTest(GatewayTestCase):
    """Headers Tornado would refuse before the body are refused first, with the JSON error,
    and before any step runs (found by review: a malformed Content-Length ran the login,
    used up the code, then got Tornado's bare 400 and no access-log line)."""

    def test_malformed_content_length_is_refused_before_the_flow_runs(self) -> None:
        code = self.wx_login("framing")
        head = f"POST /v1/demo/login?code={code} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        for declared in ("2, 3", "-2", "+2", "\u00b2", "0x2"):
            raw = (head + f"Content-Length: {declared}\r\n\r\n{{}}").encode("latin-1")
            reply, closed = answer_and_close(self, raw)
            assert (reply.status, reply.json()["error"]["code"]) == (400, "invalid_field"), (declared, reply)
            assert reply.headers["connection"] == "close"
            assert closed
        # the code was never sent to WeChat: it still logs in
        assert self.call("/v1/demo/login", {"code": code})[0] == 200

    def test_a_list_of_equal_lengths_is_accepted_as_tornado_does(self) -> None:
        raw = b"POST /v1/demo/login HTTP/1.1\r\nHost: x\r\nContent-Length: 2, 2\r\n\r\n{}"
        reply, _ = answer_and_close(self, raw, closes=False)
        assert (reply.status, reply.json()["error"]["code"]) == (400, "missing_field")

    def test_bad_transfer_encoding_and_host_are_refused_with_the_json_error(self) -> None:
        for raw in (
            b"POST /v1/demo/login HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}",
            b"POST /v1/demo/login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"POST /v1/demo/login HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}",  # HTTP/1.1 needs Host
            b"POST /v1/demo/login HTTP/1.1\r\nHost: a\r\nHost: b\r\nContent-Length: 2\r\n\r\n{}",
            b"POST /v1/demo/login HTTP/1.1\r\nHost: a b\r\nContent-Length: 2\r\n\r\n{}",
        ):
            reply, closed = answer_and_close(self, raw)
            assert (reply.status, reply.json()["error"]["code"]) == (400, "invalid_field"), raw
            assert closed, raw
        # HTTP/1.0 does not need Host
        reply, _ = answer_and_close(self, b"POST /v1/demo/login HTTP/1.0\r\nContent-Length: 2\r\n\r\n{}", closes=False)
        assert (reply.status, reply.json()["error"]["code"]) == (400, "missing_field")

    def test_an_early_413_says_the_connection_closes(self) -> None:
        raw = b"POST /v1/demo/login HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n"
        reply, closed = answer_and_close(self, raw)
        assert (reply.status, reply.headers["connection"]) == (413, "close")
        assert closed

    def test_head_refused_by_tornados_parser_gets_headers_without_a_body(self) -> None:
        """Was: no answer at all (the refusal wrote a body Tornado does not allow for HEAD)."""
        query = "&".join(f"f{i}=1" for i in range(1100))
        reply, _ = answer_and_close(self, f"HEAD /healthz?{query} HTTP/1.1\r\nHost: x\r\n\r\n".encode(), closes=False)
        assert reply.status == 400
        assert int(reply.headers["content-length"]) > 0

    def test_unknown_method_is_405_with_allow_and_keeps_the_connection(self) -> None:
        replies = exchange(
            self,
            [
                b"FOO /v1/demo/login HTTP/1.1\r\nHost: x\r\n\r\n",
                b"PUT /v1/demo/phone HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}",
                b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
            ],
        )
        assert [r.status for r in replies] == [405, 405, 200]
        assert [r.headers.get("allow") for r in replies[:2]] == ["POST", "GET, POST"]
        assert all(r.headers.get("connection", "") != "close" for r in replies)


class BodyTimeoutTest(GatewayTestCase):
    config_text = """
server: {request_timeout: 0.3}
storage: {plugin: memory}
apps:
  demo: {appid: wx0000000000demo0, secret: demo-secret-123, upstream: sandbox}
"""

    def test_a_body_that_does_not_arrive_is_408_and_the_connection_closed(self) -> None:
        started = b'POST /v1/demo/login HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\n\r\n{"co'  # 4 of 20 bytes
        reply, closed = answer_and_close(self, started)
        assert (reply.status, reply.json()["error"]["code"]) == (408, "body_timeout")
        assert reply.headers["connection"] == "close"
        assert closed


class CancelledAwaitStep(Step[Any]):
    """Awaits a future that something else cancels (not the request's task)."""

    name: ClassVar[str] = "cancelled_await"
    version: ClassVar[str] = "0.0.1"

    async def __call__(self, ctx: Context) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(0.01, future.cancel)
        await future


class CancelledAwaitTest(GatewayTestCase):
    """Was: taken for the process stopping, so the connection was dropped without an answer
    or an access-log line."""

    def get_config(self) -> Any:
        return login_config("[cancelled_await]", CancelledAwaitStep)

    def test_a_step_whose_await_is_cancelled_fails_the_request_not_the_connection(self) -> None:
        failed, health = exchange(self, [request("POST", "/v1/demo/login", b"{}"), request("GET", "/healthz")])
        assert (failed.status, failed.json()["error"]["code"]) == (500, "step_failed")
        assert health.status == 200
