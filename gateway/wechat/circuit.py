"""A circuit breaker per upstream: after ``failures`` consecutive transport failures
(unreachable, timeout, 5xx, errcode -1) calls fail fast for ``cooldown`` seconds,
then one trial call decides whether to close it again. Under sustained failure the
gateway answers at once instead of tying up connections and clients' patience."""

from __future__ import annotations

import time
from collections.abc import Callable

from gateway.errors import UpstreamCircuitOpen


class CircuitBreaker:
    def __init__(self, failures: int, cooldown: float) -> None:
        self.threshold = failures
        self.cooldown = cooldown
        self.consecutive = 0
        self.opened_at: float | None = None
        self._trial_running = False
        self._watchers: list[Callable[[bool], None]] = []

    def watch(self, watcher: Callable[[bool], None]) -> None:
        """``watcher(is_open)`` now and at every change between closed and open (a
        half-open circuit is still open: only a successful trial closes it)."""
        self._watchers.append(watcher)
        watcher(self.opened_at is not None)

    def _changed(self, is_open: bool) -> None:
        for watcher in self._watchers:
            watcher(is_open)

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half_open" if time.monotonic() - self.opened_at >= self.cooldown else "open"

    def before_call(self) -> None:
        state = self.state
        if state == "open" or (state == "half_open" and self._trial_running):
            assert self.opened_at is not None
            wait = max(1, int(self.cooldown - (time.monotonic() - self.opened_at)) + 1)
            raise UpstreamCircuitOpen(retry_after=wait, log_detail=f"circuit open after {self.consecutive} failures")
        if state == "half_open":
            self._trial_running = True

    def success(self) -> None:
        was_open = self.opened_at is not None
        self.consecutive = 0
        self.opened_at = None
        self._trial_running = False
        if was_open:
            self._changed(False)

    def abandoned(self) -> None:
        """A call ended without a verdict on the upstream (cancelled by the request's
        timeout, say): a trial slot it held is free again, nothing is counted."""
        self._trial_running = False

    def failure(self) -> None:
        self.consecutive += 1
        self._trial_running = False
        if self.consecutive >= self.threshold:
            was_open = self.opened_at is not None
            self.opened_at = time.monotonic()
            if not was_open:
                self._changed(True)
