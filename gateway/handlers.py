"""The tornado.web handlers: health, readiness, metrics, the OpenAPI document, 404s.

Flow requests do not come here (see :mod:`gateway.flow_request`); these share its
error body and its access event (:mod:`gateway.request_record`)."""

from __future__ import annotations

import json
import os
from time import perf_counter
from typing import Any

import tornado.web

from gateway.error_response import render_error
from gateway.errors import (
    BodyTooLarge,
    GatewayError,
    InvalidField,
    MethodNotAllowed,
    NotFound,
    StepFailed,
)
from gateway.logs import get_logger
from gateway.metrics import CONTENT_TYPE
from gateway.openapi import build_openapi
from gateway.request_record import RequestRecord, new_request_id, record_request, request_id_from
from gateway.runtime import Gateway


class JSONHandler(tornado.web.RequestHandler):
    """Base: request id, JSON answers, the one error body, one access event."""

    gateway: Gateway

    def initialize(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.started = perf_counter()
        self.error: GatewayError | None = None

    def prepare(self) -> None:
        self.request_id = request_id_from(self.request.headers.get("X-Request-Id"))
        self.set_header("X-Request-Id", self.request_id)
        limit = self.gateway.config.server.max_body_bytes
        if len(self.request.body or b"") > limit:
            raise BodyTooLarge.over(limit)

    def check_xsrf_cookie(self) -> None:  # a JSON API for mini programs, not browser forms
        pass

    def write_json(self, payload: dict[str, Any], status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(payload, ensure_ascii=False, separators=(",", ":")))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        self.error = _as_gateway_error(exc, status_code)
        if not getattr(self, "request_id", ""):  # refused before prepare() ran
            self.request_id = new_request_id()
        self.set_header("X-Request-Id", self.request_id)
        answer = render_error(self.error)
        self.set_status(answer.status)
        for name, value in answer.headers.items():
            self.set_header(name, value)
        self.finish(answer.body)

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        # Tornado's version logs the full URI, whose query may carry codes and data.
        if isinstance(value, GatewayError | tornado.web.HTTPError):
            return
        get_logger("wxgate").error(
            "unhandled_exception", request_id=getattr(self, "request_id", ""), exc_info=(typ, value, tb)
        )

    def on_finish(self) -> None:
        record = RequestRecord(
            request_id=getattr(self, "request_id", ""),
            method=self.request.method or "",
            path=self.request.path,
            client_ip=self.gateway.proxies.client_address(self.request.remote_ip or "", self.request.headers),
            started=self.started,
            error=self.error,
        )
        record_request(self.gateway, record, self.get_status())


def _as_gateway_error(exc: BaseException | None, status_code: int) -> GatewayError:
    if isinstance(exc, GatewayError):
        return exc
    # Tornado's own HTTPErrors (bad method, malformed request) still get our body.
    if status_code == 405:
        return MethodNotAllowed()
    if status_code == 404:
        return NotFound()
    if 400 <= status_code < 500:
        detail = exc.log_message if isinstance(exc, tornado.web.HTTPError) else None
        return InvalidField(log_detail=detail)
    return StepFailed(log_detail=f"unhandled {type(exc).__name__}" if exc else f"status {status_code}")


class NotFoundHandler(JSONHandler):
    def prepare(self) -> None:
        super().prepare()
        raise NotFound()


class HealthHandler(JSONHandler):
    """/healthz: the process is up and serving."""

    def get(self) -> None:
        self.write_json({"status": "ok", "config": self.gateway.config.digest, "pid": os.getpid()})


class ReadyHandler(JSONHandler):
    """/readyz: storage answers, every upstream is reachable, a configuration is loaded."""

    async def get(self) -> None:
        checks: dict[str, str] = {}
        try:
            await self.gateway.storage.ping()
            checks["storage"] = "ok"
        except GatewayError as exc:
            checks["storage"] = exc.code
        self.gateway.metrics.storage_seen(checks["storage"] == "ok")
        for name, app in self.gateway.apps.items():
            reachable = app.config.uses_sandbox or await self.gateway.probes.reachable(app.config.upstream)
            checks[f"upstream:{name}"] = "ok" if reachable else "unreachable"
        ready = all(value == "ok" for value in checks.values())
        self.write_json(
            {"status": "ready" if ready else "not_ready", "checks": checks, "config": self.gateway.config.digest},
            200 if ready else 503,
        )


class OpenAPIHandler(JSONHandler):
    """/openapi.json, built once per process."""

    document: bytes | None = None

    def get(self) -> None:
        if OpenAPIHandler.document is None:
            OpenAPIHandler.document = json.dumps(build_openapi(), ensure_ascii=False).encode()
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(OpenAPIHandler.document)


class MetricsHandler(JSONHandler):
    """/metrics in Prometheus' text format."""

    def get(self) -> None:
        # No storage here, ever: scrapes may be unauthenticated and come in bursts, and a count
        # of a large outbox took seconds and starved logins of connections. The outbox gauges
        # come from the background refresh (runtime.Gateway.outbox_gauges), with their age.
        self.set_header("Content-Type", CONTENT_TYPE)
        self.finish(self.gateway.metrics.render())
