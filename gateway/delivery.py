"""Webhook delivery: every gateway process claims due outbox events under a lease and
POSTs them, signed, to their endpoint.

At least once: an event is acked only after a 2xx, so a crash (even SIGKILL) before
the ack means the lease runs out and some process delivers it again, with the same
``X-Wxgate-Event-Id``. Network errors, timeouts, 408, 429 and 5xx are retried with
exponential backoff and jitter (a Retry-After is honoured); any other answer, or
``max_attempts`` failures, dead-letters the event, which stays stored for
``wxgate events``. A delivered event is removed ``retention`` after its delivery (the
storage is told when, at the ack). Nothing here runs on a request's path.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import hmac
import json
import random
import time
import uuid
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from gateway import __version__
from gateway.config import EndpointConfig, WebhooksConfig
from gateway.errors import GatewayError
from gateway.logs import get_logger
from gateway.metrics import Metrics
from gateway.storage import OutboxEvent, Storage

RETRYABLE_STATUS = frozenset({408, 429})
log = get_logger("wxgate.delivery")


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>``, as receivers verify it."""
    mac = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


class Deliverer:
    def __init__(
        self,
        storage: Storage,
        settings: WebhooksConfig,
        http: AsyncHTTPClient | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.storage = storage
        self.settings = settings
        self.endpoints: dict[str, EndpointConfig] = {e.name: e for e in settings.active}
        self.http = http
        self.metrics = metrics
        self._started = False
        self.owner = f"delivery-{uuid.uuid4().hex[:12]}"
        self.counts: dict[str, int] = {"delivered": 0, "retried": 0, "dead": 0}
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        # callers waiting for an idle poll's turn (the outbox gauges, the session sweep), first come first
        self._turns: collections.deque[asyncio.Future[None]] = collections.deque()
        # the soonest next_attempt_at this process gave a retried event (the next poll's deadline)
        self._next_due: float | None = None

    def wake(self) -> None:
        self._wake.set()

    async def idle_turn(self, limit: float) -> None:
        """Wait until the delivery loop would next poll an idle outbox, and take that poll's
        place: the caller's storage command (the outbox gauges' refresh) then adds none to
        an idle process's one command per ``poll_interval``; several callers take turns, one a
        poll. Returns at once when the loop
        is not running, and after ``limit`` seconds when it is busy delivering (a process
        that is not idle has no idle budget to keep)."""
        if self._task is None or self._task.done() or self._stopping:
            return
        turn = asyncio.get_running_loop().create_future()
        self._turns.append(turn)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(turn, limit)  # on timeout turn is cancelled: the loop polls as usual
        finally:
            with contextlib.suppress(ValueError):
                self._turns.remove(turn)

    def start(self) -> None:
        """Run the delivery loop (only while some endpoint is configured)."""
        if self.http is None:
            self.http = AsyncHTTPClient()
        self._started = True
        if self.endpoints and (self._task is None or self._task.done()):
            self._stopping = False
            self._task = asyncio.create_task(self._run())

    def reconfigure(self, settings: WebhooksConfig) -> None:
        """New endpoints and policy from a reloaded configuration; events queued for a
        removed endpoint are dead-lettered when next claimed."""
        self.settings = settings
        self.endpoints = {e.name: e for e in settings.active}
        if self._started:
            self.start()

    async def stop(self, grace: float = 10.0) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            # past the grace period, in-flight deliveries keep their lease and are retried elsewhere
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._task, grace)

    async def _run(self) -> None:
        while not self._stopping:
            # Cleared before the claim, not after it: an event queued while this claim or its
            # deliveries run must still wake the loop at once.
            self._wake.clear()
            try:
                events = await self.storage.claim_events(
                    self.owner, self.settings.concurrency, self.settings.lease_seconds, time.time()
                )
            except GatewayError as exc:
                log.warning("delivery_claim_failed", error=exc.code, detail=exc.log_detail)
                events = []
            except Exception:
                log.exception("delivery_claim_crashed")
                events = []
            if events:
                await asyncio.gather(*(self._deliver(event) for event in events))
                if len(events) >= self.settings.concurrency:
                    continue  # a full batch: more may be due now
            # Fewer than a batch were due: the claim found all there were, so the next poll
            # waits (an event queued here meanwhile, or a retry coming due, ends the wait sooner).
            await self._idle()

    async def _idle(self) -> None:
        """Until the next poll: poll_interval, or at once when woken (an event queued here),
        or when the soonest retry this process scheduled comes due, if that is sooner."""
        due, self._next_due = self._next_due, None
        while True:
            wait = self.settings.poll_interval
            if due is not None and due - time.time() < wait:
                wait = max(0.0, due - time.time())
            try:
                await asyncio.wait_for(self._wake.wait(), wait)
            except TimeoutError:
                if wait < self.settings.poll_interval:
                    return  # a retry is due: its claim is this poll, not the gauges' read
                while self._turns:
                    turn = self._turns.popleft()
                    if not turn.done():
                        turn.set_result(None)  # this poll's turn goes to the first waiting caller
                        break
                else:
                    return
                continue
            return

    async def _deliver(self, event: OutboxEvent) -> None:
        try:
            await self._attempt(event)
        except GatewayError as exc:  # storage trouble while recording the outcome: the lease will expire
            log.warning("delivery_bookkeeping_failed", event_id=event.id, error=exc.code)
        except Exception:
            log.exception("delivery_crashed", event_id=event.id)

    async def _attempt(self, event: OutboxEvent) -> None:
        endpoint = self.endpoints.get(event.endpoint)
        if endpoint is None:
            await self._dead(event, f"endpoint {event.endpoint!r} is no longer configured")
            return
        body = json.dumps(event.payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        timestamp = str(int(time.time()))
        request = HTTPRequest(
            endpoint.url,
            method="POST",
            body=body,
            headers={
                "Content-Type": "application/json",
                "User-Agent": f"wxgate/{__version__}",
                "X-Wxgate-Event-Id": str(event.payload.get("id", event.id)),
                "X-Wxgate-Event-Type": event.type,
                "X-Wxgate-Timestamp": timestamp,
                "X-Wxgate-Signature": signature(endpoint.secret.get_secret_value(), timestamp, body),
            },
            connect_timeout=endpoint.timeout,
            request_timeout=endpoint.timeout,
            follow_redirects=False,
        )
        assert self.http is not None
        retry_after: float | None = None
        try:
            response = await self.http.fetch(request, raise_error=False)
        except Exception as exc:  # refused, reset, timed out: the receiver may come back
            outcome = f"{type(exc).__name__}: {exc}"[:200]
            status = 0
        else:
            status = response.code
            outcome = f"HTTP {status}"
            if status in (429, 503):
                retry_after = _seconds(response.headers.get("Retry-After"))
        attempt = event.attempts + 1
        log.info(
            "delivery", event_id=event.id, type=event.type, endpoint=event.endpoint, status=status, attempt=attempt
        )
        if 200 <= status < 300:
            await self.storage.ack_event(event.id, self.owner, time.time() + self.settings.retention)
            self._count(event, "delivered")
        elif status == 0 or status >= 500 or status in RETRYABLE_STATUS:
            if attempt >= self.settings.max_attempts:
                await self._dead(event, f"{outcome} after {attempt} attempts")
                return
            delay = self.backoff(attempt)
            if retry_after is not None:
                delay = max(delay, min(retry_after, self.settings.backoff_max))
            retry_at = time.time() + delay
            await self.storage.retry_event(event.id, self.owner, retry_at, outcome)
            self._next_due = retry_at if self._next_due is None else min(self._next_due, retry_at)
            self._count(event, "retried")
        else:
            await self._dead(event, f"{outcome}: the receiver refused it")

    async def _dead(self, event: OutboxEvent, reason: str) -> None:
        await self.storage.dead_letter_event(event.id, self.owner, reason)
        self._count(event, "dead")
        log.warning("delivery_dead_lettered", event_id=event.id, endpoint=event.endpoint, reason=reason)

    def _count(self, event: OutboxEvent, outcome: str) -> None:
        self.counts[outcome] += 1
        if self.metrics is not None:
            self.metrics.delivery(event.endpoint, outcome)

    def backoff(self, attempt: int) -> float:
        """Exponential with full jitter over the upper half: spreads retries of many events."""
        ceiling: float = min(self.settings.backoff_max, self.settings.backoff_initial * 2.0 ** (attempt - 1))
        return ceiling * random.uniform(0.5, 1.0)  # noqa: S311 (jitter, not secrecy)


def _seconds(value: Any) -> float | None:
    try:
        return max(0.0, float(str(value)))
    except (TypeError, ValueError):
        return None
