"""Prometheus metrics (prometheus-client), one :class:`Metrics` per process.

With several worker processes, ``enable_multiprocess`` (called by the server before
any worker starts) switches prometheus-client to its multi-process mode, so a scrape
of any worker reports the sum over all of them. prometheus_client is imported lazily
for that reason: its mode is fixed at import time.

A scrape never touches the storage: ``/metrics`` needs no token when none is set, and
scrapes may come in bursts. The outbox gauges are read by :class:`OutboxGaugeRefresher`,
one background task per process, and a scrape shows the last values with their age.
"""

from __future__ import annotations

import asyncio
import math
import os
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from gateway.background import BackgroundLoop
from gateway.errors import GatewayError
from gateway.logs import get_logger
from gateway.storage import EVENT_STATUSES

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from gateway.storage import Storage

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STEP_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0, 5.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# A backlog shows within one usual scrape interval, while a count of a large outbox (it took
# seconds at 50,000 events) runs at most four times a minute in each process.
OUTBOX_REFRESH_SECONDS = 15.0
OUTBOX_REFRESHED = "wxgate_outbox_events_refreshed_timestamp_seconds"
OUTBOX_AGE = "wxgate_outbox_events_age_seconds"

log = get_logger("wxgate.metrics")


def enable_multiprocess() -> str | None:
    """Give worker processes a shared directory for their metric files. Returns the
    directory when this call created it (the caller removes it at exit)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return None  # the operator's own directory: theirs to manage
    path = tempfile.mkdtemp(prefix="wxgate-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    return path


def forget_process(pid: int) -> None:
    """In the parent, once worker ``pid`` has exited: its live gauges (the configuration
    digest it served, its circuits) leave the scrapes; its counters stay in the sums."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


class Metrics:
    """``worker`` labels what is per process by nature (reloads: each worker reloads on
    its own, and a sum over workers would hide the one that refused)."""

    def __init__(self, worker: str = "0") -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.worker = worker
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
        # livemax: with several workers, the freshest refresh is the one whose values the
        # (livemostrecent) outbox gauge shows; the age at scrape time is derived from it.
        self.outbox_refreshed = Gauge(
            OUTBOX_REFRESHED, "Unix time the outbox gauges were last read from the storage (0: not yet)",
            registry=r, multiprocess_mode="livemax",
        )  # fmt: skip
        self.config_info = Gauge(
            "wxgate_config_info", "The loaded configuration's digest (value 1)", ["digest"], registry=r,
            multiprocess_mode="livemax",
        )  # fmt: skip
        self.reloads = Counter(
            "wxgate_config_reloads_total", "Configuration reloads by result and worker", ["result", "worker"],
            registry=r,
        )  # fmt: skip
        # livemostrecent: the latest observation of any worker, as storage state is shared
        self.storage_up = Gauge(
            "wxgate_storage_up", "1 when the storage answered its last use by a background task or probe, else 0",
            registry=r, multiprocess_mode="livemostrecent",
        )  # fmt: skip
        # livemax: each worker has its own breaker; open in one is open for its clients
        self.circuit_open = Gauge(
            "wxgate_upstream_circuit_open", "1 while the app's upstream circuit is open (calls fail fast)", ["app"],
            registry=r, multiprocess_mode="livemax",
        )  # fmt: skip
        self.rate_limited = Counter(
            "wxgate_rate_limited_total", "Requests refused by a rate limit", ["app", "flow", "per"], registry=r
        )
        # the code is one of the stable error codes, never text a client sent
        self.flow_errors = Counter(
            "wxgate_flow_errors_total", "Flow requests answered with an error, by its code", ["app", "flow", "code"],
            registry=r,
        )  # fmt: skip
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

    def failed(self, app: str, flow: str, code: str) -> None:
        self._child(self.flow_errors, app, flow, code).inc()

    def limited(self, app: str, flow: str, per: str) -> None:
        self._child(self.rate_limited, app, flow, per).inc()

    def config_loaded(self, digest: str) -> None:
        if self._digest is not None and self._digest != digest:
            self.config_info.labels(self._digest).set(0)
        self.config_info.labels(digest).set(1)
        if self._digest is not None:
            self.reloads.labels("ok", self.worker).inc()
        self._digest = digest

    def reload_failed(self) -> None:
        self.reloads.labels("refused", self.worker).inc()

    def storage_seen(self, up: bool) -> None:
        self.storage_up.set(1 if up else 0)

    def circuit(self, app: str, is_open: bool) -> None:
        self.circuit_open.labels(app).set(1 if is_open else 0)

    def set_outbox(self, counts: dict[str, int]) -> None:
        """The outbox counts, just read from the storage."""
        for status in EVENT_STATUSES:
            self.outbox.labels(status).set(counts.get(status, 0))
        self.outbox_refreshed.set(time.time())

    def render(self) -> bytes:
        """The text exposition. Reads no storage: the outbox gauges are whatever the last
        refresh left, and their age is computed here so a stalled refresher shows."""
        from prometheus_client import generate_latest

        if self.multiprocess:
            from prometheus_client import multiprocess

            source: Any = multiprocess.MultiProcessCollector(None)  # type: ignore[no-untyped-call]
        else:
            source = self.registry
        families = list(source.collect())
        families.append(_outbox_age(families, time.time()))
        return bytes(generate_latest(_Families(families)))


class _Families:
    """Already collected metric families, in the shape generate_latest takes."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


def _outbox_age(families: list[Metric], now: float) -> Metric:
    from prometheus_client.core import GaugeMetricFamily

    refreshed = next((s.value for f in families if f.name == OUTBOX_REFRESHED for s in f.samples), 0.0)
    # +Inf rather than no sample: an alert on the age also fires when no refresh ever succeeded
    age = max(0.0, now - refreshed) if refreshed > 0 else math.inf
    return GaugeMetricFamily(OUTBOX_AGE, "Seconds since the outbox gauges were read from the storage", value=age)


class OutboxGaugeRefresher(BackgroundLoop):
    """Reads the outbox counts (one ``count_events()``) into the gauges, at most once per
    ``interval``, from start() to stop(): that is, while the process serves.

    ``turn`` (the webhook deliverer's ``idle_turn``) lets the read take the place of one
    idle outbox poll, so the gauges add no storage command to an idle process's budget.
    A failed read is logged and the previous values stay, their age growing.
    """

    interval: float = OUTBOX_REFRESH_SECONDS

    def __init__(
        self,
        storage: Storage,
        metrics: Metrics,
        turn: Callable[[float], Awaitable[None]] | None = None,
        interval: float | None = None,
    ) -> None:
        self.storage = storage
        self.metrics = metrics
        self.turn = turn
        if interval is not None:
            self.interval = interval

    async def refresh(self) -> bool:
        """One read; True when the gauges were updated."""
        try:
            counts = await self.storage.count_events()
        except GatewayError as exc:
            log.warning("outbox_gauges_refresh_failed", error=exc.code, detail=exc.log_detail)
            if exc.code == "storage_unavailable":
                self.metrics.storage_seen(False)
            return False
        except Exception:
            # a third-party storage's bug must not end the task: the next interval tries again
            log.exception("outbox_gauges_refresh_crashed")
            return False
        self.metrics.set_outbox(counts)
        self.metrics.storage_seen(True)
        return True

    async def _run(self) -> None:
        while True:
            if self.turn is not None:
                await self.turn(self.interval)
            await self.refresh()
            await asyncio.sleep(self.interval)
