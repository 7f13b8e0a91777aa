"""What the console needs and the gateway's metrics do not count: errors by their code,
which step failed, and the last reload. Learnt from the gateway's own hooks.

The two counters join the gateway's registry, so they are scraped at ``/metrics`` too
while the console is on; with several workers prometheus-client's multi-process files
add them up like every other counter.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.hookspecs import hookimpl

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

FLOW_ERRORS = "wxgate_flow_errors_total"
STEP_FAILURES = "wxgate_step_failures_total"


@dataclass(frozen=True, slots=True)
class Reload:
    digest: str
    previous_digest: str
    at: float


class ConsoleObserver:
    """A hook plugin (registered on the gateway's :class:`~gateway.hooks.Hooks`)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        from prometheus_client import Counter

        # labels come from configured apps, flows and steps and from the stable error codes:
        # never from what a client typed
        self.flow_errors = Counter(
            "wxgate_flow_errors", "Flow requests answered with an error, by its code", ["app", "flow", "code"],
            registry=registry,
        )  # fmt: skip
        self.step_failures = Counter(
            "wxgate_step_failures", "Steps that stopped their flow, by error code", ["app", "flow", "step", "code"],
            registry=registry,
        )  # fmt: skip
        self.last_reload: Reload | None = None

    @hookimpl
    def wxgate_request_finished(self, app: str, flow: str, error: str | None) -> None:
        if error is not None:
            self.flow_errors.labels(app, flow, error).inc()

    @hookimpl
    def wxgate_step_failed(self, app: str, flow: str, step: str, error: str) -> None:
        self.step_failures.labels(app, flow, step, error).inc()

    @hookimpl
    def wxgate_config_reloaded(self, digest: str, previous_digest: str) -> None:
        self.last_reload = Reload(digest=digest, previous_digest=previous_digest, at=time.time())
