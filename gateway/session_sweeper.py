"""Removing expired login sessions, in the background of each gateway process.

Expired sessions are refused on read whatever happens here; this only keeps the storage from
holding them. The storage decides how (:meth:`Storage.sweep_expired_sessions`: one indexed
delete on MongoDB, nothing for storages whose records expire by themselves).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable

from gateway.background import BackgroundLoop
from gateway.errors import GatewayError
from gateway.logs import get_logger
from gateway.storage import Storage

log = get_logger("wxgate.storage")

SESSION_SWEEP_SECONDS = 600.0


class SessionSweeper(BackgroundLoop):
    """Calls ``storage.sweep_expired_sessions`` every ``interval`` from start() to stop(), the
    first time at a random point of the interval's second half (processes started together do
    not sweep together). ``turn`` (the webhook deliverer's ``idle_turn``) lets the sweep take
    the place of one idle outbox poll, so it adds nothing to an idle process's one storage
    command a second. A failed sweep is logged; the next one removes what this one did not."""

    def __init__(
        self,
        storage: Storage,
        turn: Callable[[float], Awaitable[None]] | None = None,
        interval: float = SESSION_SWEEP_SECONDS,
    ) -> None:
        self.storage = storage
        self.turn = turn
        self.interval = interval

    async def sweep(self) -> int:
        """One sweep now; how many sessions went (0 when it failed)."""
        try:
            removed = await self.storage.sweep_expired_sessions(time.time())
        except GatewayError as exc:
            log.warning("sessions_sweep_failed", error=exc.code, detail=exc.log_detail)
            return 0
        except Exception:
            # a third-party storage's bug must not end the task: the next interval tries again
            log.exception("sessions_sweep_crashed")
            return 0
        if removed:
            log.info("sessions_swept", removed=removed)
        return removed

    async def _run(self) -> None:
        await asyncio.sleep(random.uniform(0.5, 1.0) * self.interval)  # noqa: S311 (spreading, not a secret)
        while True:
            began = time.monotonic()
            if self.turn is not None:
                await self.turn(self.interval)
            await self.sweep()
            # the wait for a turn is part of the interval: a busy process still sweeps every interval
            await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - began)))
