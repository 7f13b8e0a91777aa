"""What every answered request leaves behind: one access event, its metrics, the
``wxgate_request_finished`` hook. Shared by the flow path and the tornado.web handlers,
so both record a request the same way."""

from __future__ import annotations

import os
import random
import re
from dataclasses import dataclass
from time import perf_counter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.context import Context
    from gateway.errors import GatewayError
    from gateway.runtime import Gateway

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


class _RequestIds:
    """32 hex digits: a random prefix per process, then 64 bits from a generator seeded
    from the OS. Unique across workers and restarts, and unordered (the ids of a response
    do not tell a client how many requests others made). Request ids are labels, not
    secrets: no system call per request."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.prefix = os.urandom(8).hex()
        self.random = random.Random(os.urandom(16))  # noqa: S311 (not a secret)

    def new(self) -> str:
        return f"{self.prefix}{self.random.getrandbits(64):016x}"


_ids = _RequestIds()
os.register_at_fork(after_in_child=_ids.reset)  # pre-forked workers must not share a sequence
new_request_id = _ids.new


def request_id_from(given: str | None) -> str:
    """The client's X-Request-Id when it is a sane token, otherwise a new one."""
    return given if given and _REQUEST_ID.match(given) else new_request_id()


@dataclass(slots=True)
class RequestRecord:
    request_id: str
    method: str
    path: str
    client_ip: str
    started: float
    app: str = ""
    flow: str = ""
    ctx: Context | None = None
    error: GatewayError | None = None


def record_request(gateway: Gateway, record: RequestRecord, status: int) -> None:
    duration_ms = round((perf_counter() - record.started) * 1000.0, 3)
    event: dict[str, Any] = {
        "request_id": record.request_id,
        "method": record.method,
        "path": record.path,
        "status": status,
        "duration_ms": duration_ms,
        "client_ip": record.client_ip,
    }
    if record.app:
        event["app"] = record.app
    if record.flow:
        event["flow"] = record.flow
    ctx, error = record.ctx, record.error
    if ctx is not None:
        event["steps"] = ctx.timings
        if ctx.session is not None:
            event["openid"] = ctx.session.openid
    if error is not None:
        event["error"] = error.code
        if error.log_detail:
            event["detail"] = error.log_detail
    gateway.access_log.info("request", **event)
    if ctx is None:
        return
    # labels only from configured apps and flows: never from what a client typed
    gateway.metrics.request(record.app, record.flow, status, duration_ms / 1000.0, ctx.timings)
    if error is not None:
        gateway.metrics.failed(record.app, record.flow, error.code)
    limited = ctx.outcome.rate_limited
    if limited:
        gateway.metrics.limited(record.app, record.flow, limited)
    gateway.hooks.notify(
        "wxgate_request_finished",
        request_id=record.request_id,
        app=record.app,
        flow=record.flow,
        status=status,
        error=event.get("error"),
        duration_ms=duration_ms,
        steps=ctx.timings,
    )
