"""The one place an error becomes an HTTP answer: status, headers and JSON body from the
error table (:mod:`gateway.errors`). The flow path, the tornado.web handlers and the
refusals of requests Tornado cannot parse all render through :func:`render_error`."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.errors import GatewayError
from gateway.jsoncodec import dumps

JSON_TYPE = "application/json; charset=utf-8"


@dataclass(frozen=True, slots=True)
class ErrorAnswer:
    status: int
    headers: dict[str, str]
    body: bytes


def render_error(error: GatewayError, *, retryable: bool | None = None, allow: str | None = None) -> ErrorAnswer:
    """``retryable`` overrides the error class's (the flow knows when a single-use input
    was spent); ``allow`` is the Allow header of a 405."""
    headers = {"Content-Type": JSON_TYPE, "Cache-Control": "no-store"}
    if error.client_retry_after is not None:
        headers["Retry-After"] = str(error.client_retry_after)
    if allow is not None:
        headers["Allow"] = allow
    if error.challenge is not None:
        headers["WWW-Authenticate"] = error.challenge
    return ErrorAnswer(error.status, headers, dumps(error.body(retryable)))
