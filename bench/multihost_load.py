"""The drill's clients: phones (the sandbox's device simulator) and the mini program's calls to
the gateways, from the root namespace, bounded by count and by time.

A result per gateway call: which host, the status (0: no answer, the connection failed),
whether a 503 carried Retry-After, the latency. Device calls only prepare a request; they
are not counted as the gateway's.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest, HTTPResponse

APP = "demo"
CONNECT_TIMEOUT = 3.0
REQUEST_TIMEOUT = 15.0


@dataclass(frozen=True, slots=True)
class Result:
    host: str
    flow: str
    status: int  # 0: the connection failed or timed out
    retry_after: bool
    latency: float
    started: float  # time.time()


@dataclass(slots=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: dict[str, Any]


class DeviceError(RuntimeError):
    """The fake WeChat's device side failed: no request could be prepared."""


@dataclass
class Clients:
    sandbox: str  # http://front address of the upstream host:port
    hosts: dict[str, str]  # gateway role -> base URL on its front link
    http: AsyncHTTPClient = field(default_factory=lambda: AsyncHTTPClient(force_instance=True, max_clients=64))

    async def call(self, method: str, url: str, body: dict[str, Any] | None = None, token: str | None = None) -> Answer:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        request = HTTPRequest(
            url,
            method,
            headers=headers,
            body=json.dumps(body) if body is not None else ("" if method == "POST" else None),
            connect_timeout=CONNECT_TIMEOUT,
            request_timeout=REQUEST_TIMEOUT,
        )
        response: HTTPResponse | None
        try:
            response = await self.http.fetch(request, raise_error=False)
        except (HTTPClientError, OSError):
            response = None
        if response is None or response.code == 599:
            return Answer(0, {}, {})
        try:
            parsed = json.loads(response.body) if response.body else {}
        except ValueError:
            parsed = {}
        return Answer(response.code, dict(response.headers), parsed if isinstance(parsed, dict) else {})

    async def device(self, action: str, user: str) -> dict[str, Any]:
        answer = await self.call("POST", f"{self.sandbox}/_sandbox/{APP}/{action}", {"user": user})
        if answer.status != 200:
            raise DeviceError(f"{action} for {user}: HTTP {answer.status} {answer.body}")
        return answer.body

    async def flow(
        self, host: str, method: str, path: str, body: dict[str, Any] | None = None, token: str | None = None
    ) -> tuple[Result, Answer]:
        started, clock = time.time(), time.monotonic()
        answer = await self.call(method, f"{self.hosts[host]}/v1/{APP}/{path}", body, token)
        retry_after = "Retry-After" in answer.headers
        result = Result(host, path, answer.status, retry_after, time.monotonic() - clock, started)
        return result, answer

    async def login(self, host: str, user: str) -> str:
        code = (await self.device("wx.login", user))["code"]
        result, answer = await self.flow(host, "POST", "login", {"code": code})
        if result.status != 200:
            raise DeviceError(f"login of {user} on {host}: HTTP {result.status} {answer.body}")
        return str(answer.body["token"])

    async def phone_code(self, host: str, user: str, token: str) -> Result:
        """The button's phone code (2.21.2+): the flow that needs the access token."""
        code = (await self.device("getPhoneNumber", user))["code"]
        result, _ = await self.flow(host, "POST", "phone", {"code": code}, token)
        return result

    async def ready(self, host: str) -> int:
        return (await self.call("GET", f"{self.hosts[host]}/readyz")).status


async def phone_load(
    clients: Clients,
    users: list[tuple[str, str]],
    hosts: list[str],
    per_host: int,
    seconds: float,
    max_requests: int,
    until: asyncio.Event | None = None,
    pause: float = 0.0,
) -> list[Result]:
    """``per_host`` concurrent clients on each host sending /phone with a fresh phone code,
    each waiting ``pause`` seconds after an answer (a paced load), until ``seconds`` have
    passed, ``max_requests`` were sent, or ``until`` is set."""
    results: list[Result] = []
    deadline = time.monotonic() + seconds
    sent = 0

    async def client(host: str, offset: int) -> None:
        nonlocal sent
        turn = offset
        while sent < max_requests and time.monotonic() < deadline and not (until and until.is_set()):
            sent += 1
            user, token = users[turn % len(users)]
            turn += per_host * len(hosts)
            try:
                results.append(await clients.phone_code(host, user, token))
            except DeviceError:
                await asyncio.sleep(0.1)  # the phone could not get a code: nothing sent
            if pause:
                await asyncio.sleep(pause)

    offsets = range(per_host * len(hosts))
    await asyncio.gather(*(client(hosts[i % len(hosts)], i) for i in offsets))
    return results


def percentile(values: list[float], share: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]
