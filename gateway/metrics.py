"""Prometheus metrics (prometheus-client), one :class:`Metrics` per process.

With several worker processes, ``enable_multiprocess`` (called by the server before
any worker starts) switches prometheus-client to its multi-process mode, so a scrape
of any worker reports the sum over all of them. prometheus_client is imported lazily
for that reason: its mode is fixed at import time.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from gateway.storage import EVENT_STATUSES

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STEP_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0, 5.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def enable_multiprocess() -> str | None:
    """Give worker processes a shared directory for their metric files. Returns the
    directory when this call created it (the caller removes it at exit)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return None  # the operator's own directory: theirs to manage
    path = tempfile.mkdtemp(prefix="wxgate-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    return path


class Metrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "wxgate_requests_total", "Flow requests answered", ["app", "flow", "status"], registry=r
        )
        self.request_seconds = Histogram(
            "wxgate_request_duration_seconds",
            "Flow request latency",
            ["app", "flow"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.step_seconds = Histogram(
            "wxgate_step_duration_seconds",
            "Time in each pipeline step",
            ["flow", "step"],
            buckets=STEP_BUCKETS,
            registry=r,
        )
        self.upstream_calls = Counter(
            "wxgate_upstream_calls_total",
            "WeChat API calls by errcode (or transport error)",
            ["api", "errcode"],
            registry=r,
        )
        self.token_refreshes = Counter(
            "wxgate_access_token_refreshes_total", "Access tokens fetched from WeChat", ["appid"], registry=r
        )
        self.deliveries = Counter(
            "wxgate_webhook_deliveries_total",
            "Webhook delivery attempts by outcome",
            ["endpoint", "outcome"],
            registry=r,
        )
        self.outbox = Gauge(
            "wxgate_outbox_events", "Events in the outbox by status", ["status"], registry=r,
            multiprocess_mode="livemostrecent",
        )  # fmt: skip
        self.config_info = Gauge(
            "wxgate_config_info", "The loaded configuration's digest (value 1)", ["digest"], registry=r,
            multiprocess_mode="livemax",
        )  # fmt: skip
        self.reloads = Counter("wxgate_config_reloads_total", "Configuration reloads", ["result"], registry=r)
        self.rate_limited = Counter(
            "wxgate_rate_limited_total", "Requests refused by a rate limit", ["app", "flow", "per"], registry=r
        )
        self._digest: str | None = None
        self._children: dict[tuple[Any, ...], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        # labels() takes a lock and builds a key: cache the children on the hot path
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def request(self, app: str, flow: str, status: int, seconds: float, steps: dict[str, float]) -> None:
        self._child(self.requests, app, flow, str(status)).inc()
        self._child(self.request_seconds, app, flow).observe(seconds)
        for step, ms in steps.items():
            self._child(self.step_seconds, flow, step).observe(ms / 1000.0)

    def upstream(self, api: str, errcode: str) -> None:
        self._child(self.upstream_calls, api, errcode).inc()

    def token_refreshed(self, appid: str) -> None:
        self._child(self.token_refreshes, appid).inc()

    def delivery(self, endpoint: str, outcome: str) -> None:
        self._child(self.deliveries, endpoint, outcome).inc()

    def limited(self, app: str, flow: str, per: str) -> None:
        self._child(self.rate_limited, app, flow, per).inc()

    def config_loaded(self, digest: str) -> None:
        if self._digest is not None and self._digest != digest:
            self.config_info.labels(self._digest).set(0)
        self.config_info.labels(digest).set(1)
        if self._digest is not None:
            self.reloads.labels("ok").inc()
        self._digest = digest

    def reload_failed(self) -> None:
        self.reloads.labels("refused").inc()

    def set_outbox(self, counts: dict[str, int]) -> None:
        for status in EVENT_STATUSES:
            self.outbox.labels(status).set(counts.get(status, 0))

    def render(self) -> bytes:
        from prometheus_client import CollectorRegistry, generate_latest

        if self.multiprocess:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return bytes(generate_latest(registry))
        return bytes(generate_latest(self.registry))
