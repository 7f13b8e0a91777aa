"""What the console keeps for one running gateway: its token, the metrics window and the
hook observer. One per :class:`~gateway.runtime.Gateway`, however often routes are built."""

from __future__ import annotations

import weakref
from dataclasses import dataclass

from tornado.ioloop import PeriodicCallback

from gateway.admin.observer import FLOW_ERRORS, STEP_FAILURES, ConsoleObserver
from gateway.admin.security import AdminToken
from gateway.admin.window import MetricsWindow, collect
from gateway.runtime import Gateway

# Only what the pages show is sampled: the window keeps a copy every few seconds.
SAMPLED = frozenset(
    {
        "wxgate_requests_total",
        "wxgate_request_duration_seconds_bucket",
        "wxgate_step_duration_seconds_bucket",
        "wxgate_step_duration_seconds_count",
        "wxgate_config_reloads_total",
        FLOW_ERRORS,
        STEP_FAILURES,
    }
)


@dataclass(slots=True)
class AdminState:
    gateway: Gateway
    token: AdminToken
    window: MetricsWindow
    observer: ConsoleObserver
    timer: PeriodicCallback | None = None

    def start_sampling(self) -> None:
        """Sample every few seconds from the first API call on (in the serving loop), so that
        the window covers the last minutes even when nobody looked at the page meanwhile."""
        if self.timer is None:
            self.timer = PeriodicCallback(self.window.tick, self.window.every * 1000.0)
            self.timer.start()


_states: weakref.WeakKeyDictionary[Gateway, AdminState] = weakref.WeakKeyDictionary()


def admin_state(gateway: Gateway, token: str) -> AdminState:
    state = _states.get(gateway)
    if state is None:
        observer = ConsoleObserver(gateway.metrics.registry)
        gateway.hooks.register(observer)  # named after its class: gateway.admin.observer.ConsoleObserver
        window = MetricsWindow(lambda: collect(gateway.metrics, SAMPLED))
        state = _states[gateway] = AdminState(gateway, AdminToken(token), window, observer)
    else:
        state.token = AdminToken(token)
    return state
