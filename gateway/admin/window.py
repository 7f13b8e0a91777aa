"""Rates and percentiles over the last minutes, from the gateway's cumulative Prometheus metrics.

Counters and histograms only ever grow, so what happened in the last five minutes is the
difference between the values now and five minutes ago. :class:`MetricsWindow` keeps a
sample every few seconds (in memory, never in the storage) and answers with the newest
sample at least that old as the baseline; until one exists, with the zeros of the start.
With several workers the values are read through prometheus-client's multi-process
collector, so any worker answers for all of them.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.metrics import Metrics

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

WINDOW_SECONDS = 300.0
SAMPLE_EVERY_SECONDS = 10.0

Labels = tuple[tuple[str, str], ...]
Snapshot = dict[tuple[str, Labels], float]


def collect(metrics: Metrics, wanted: frozenset[str]) -> Snapshot:
    """The current value of every sample named in ``wanted``, summed over workers."""
    families: Iterable[Metric]
    if metrics.multiprocess:
        from prometheus_client import multiprocess

        families = multiprocess.MultiProcessCollector(None).collect()  # type: ignore[no-untyped-call]
    else:
        families = metrics.registry.collect()
    snapshot: Snapshot = {}
    for family in families:
        for sample in family.samples:
            if sample.name in wanted:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                snapshot[key] = snapshot.get(key, 0.0) + sample.value
    return snapshot


@dataclass(frozen=True, slots=True)
class Window:
    seconds: float
    current: Snapshot
    base: Snapshot

    def deltas(
        self, name: str, by: tuple[str, ...], where: Mapping[str, str] | None = None
    ) -> dict[tuple[str, ...], float]:
        """How much each sample ``name`` grew in the window, summed by the labels ``by``,
        over the samples whose labels match ``where``."""
        out: dict[tuple[str, ...], float] = {}
        for (sample, labels), value in self.current.items():
            if sample != name:
                continue
            found = dict(labels)
            if where and any(found.get(k) != v for k, v in where.items()):
                continue
            grown = max(0.0, value - self.base.get((sample, labels), 0.0))  # a restarted worker: no negatives
            key = tuple(found.get(label, "") for label in by)
            out[key] = out.get(key, 0.0) + grown
        return out

    def quantile_ms(self, histogram: str, q: float, where: Mapping[str, str]) -> float | None:
        """The ``q`` quantile of what ``histogram`` observed in the window, in milliseconds
        (interpolated in its bucket, as PromQL's histogram_quantile); None when it observed nothing."""
        buckets = self.deltas(f"{histogram}_bucket", ("le",), where)
        return bucket_quantile(q, {float(le): count for (le,), count in buckets.items()})

    def total(self, name: str, where: Mapping[str, str]) -> float:
        return sum(self.deltas(name, (), where).values())


def bucket_quantile(q: float, cumulative: Mapping[float, float]) -> float | None:
    bounds = sorted(cumulative)
    if not bounds or cumulative[bounds[-1]] <= 0:
        return None
    rank = q * cumulative[bounds[-1]]
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = cumulative[bound]
        if count >= rank:
            if math.isinf(bound):
                return round(lower * 1000.0, 3)  # beyond the last finite bucket: its bound is all we know
            share = (rank - below) / (count - below) if count > below else 1.0
            return round((lower + (bound - lower) * share) * 1000.0, 3)
        lower, below = bound, count
    return round(lower * 1000.0, 3)


class MetricsWindow:
    """Samples of the metrics named in ``wanted``; :meth:`window` answers for the last
    ``span`` seconds (or since the start, when that is shorter)."""

    def __init__(
        self,
        source: Callable[[], Snapshot],
        span: float = WINDOW_SECONDS,
        every: float = SAMPLE_EVERY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self.span = span
        self.every = every
        self.clock = clock
        # every counter was zero when the process started: the first baseline
        self.samples: deque[tuple[float, Snapshot]] = deque([(clock(), {})])

    def tick(self) -> None:
        """Keep a sample if the last is old enough (called periodically, and on each read)."""
        self._keep(self.clock(), self.source())

    def _keep(self, now: float, snapshot: Snapshot) -> None:
        if now - self.samples[-1][0] >= self.every:
            self.samples.append((now, snapshot))
        # the oldest kept is the newest at least `span` old: the baseline of a full window
        while len(self.samples) > 1 and self.samples[1][0] <= now - self.span:
            self.samples.popleft()

    def window(self) -> Window:
        now, current = self.clock(), self.source()
        self._keep(now, current)
        base_time, base = self.samples[0]
        return Window(seconds=round(now - base_time, 3), current=current, base=base)


def per_second(count: float, seconds: float) -> float:
    return round(count / seconds, 4) if seconds > 0 else 0.0
