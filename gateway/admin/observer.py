"""What the console needs and the gateway's metrics do not count: which step failed, and
the last reload. Learnt from the gateway's own hooks. (Errors by their code are the
gateway's own ``wxgate_flow_errors_total``.)

The counter joins the gateway's registry, so it is scraped at ``/metrics`` too while the
console is on; with several workers prometheus-client's multi-process files add it up
like every other counter.
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
        self.step_failures = Counter(
            "wxgate_step_failures", "Steps that stopped their flow, by error code", ["app", "flow", "step", "code"],
            registry=registry,
        )  # fmt: skip
        self.last_reload: Reload | None = None

    @hookimpl
    def wxgate_step_failed(self, app: str, flow: str, step: str, error: str) -> None:
        self.step_failures.labels(app, flow, step, error).inc()

    @hookimpl
    def wxgate_config_reloaded(self, digest: str, previous_digest: str) -> None:
        self.last_reload = Reload(digest=digest, previous_digest=previous_digest, at=time.time())
