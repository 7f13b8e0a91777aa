"""``/admin/api/events``: the webhook outbox's pending and dead-lettered events, and what
``wxgate events retry|purge`` does to dead letters, through the same storage calls."""

from __future__ import annotations

import time
from typing import Any

from gateway.admin.base import AdminAPIHandler, require_int
from gateway.errors import InvalidField
from gateway.storage import EVENT_STATUSES, OutboxEvent

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_IDS = 1000


def event_row(event: OutboxEvent) -> dict[str, Any]:
    """What an operator needs to judge an event; never its payload (user data)."""
    return {
        "id": event.id,
        "type": event.type,
        "appid": event.appid,
        "endpoint": event.endpoint,
        "status": event.status,
        "attempts": event.attempts,
        "created_at": event.created_at,
        "next_attempt_at": event.next_attempt_at or None,
        "last_error": event.last_error,
    }


class EventsHandler(AdminAPIHandler):
    async def get(self) -> None:
        status = self.argument("status", required=False)
        statuses = [status] if status else ["pending", "dead"]
        if any(s not in EVENT_STATUSES for s in statuses):
            raise InvalidField(f"'status' must be one of: {', '.join(EVENT_STATUSES)}.")
        text = self.argument("limit", required=False)
        limit = require_int(int(text) if text and text.isdigit() else DEFAULT_LIMIT, "limit", 1, MAX_LIMIT)
        storage = self.gateway.storage
        counts = await storage.count_events()
        events = {s: [event_row(e) for e in await storage.list_events(s, limit)] for s in statuses}  # type: ignore[arg-type]
        self.write_json({"counts": {s: counts.get(s, 0) for s in EVENT_STATUSES}, "events": events})


class RetryHandler(AdminAPIHandler):
    """POST {"ids": [...]} or {"all": true}: dead letters back to the queue, sent at once."""

    async def post(self) -> None:
        body = self.json_body()
        ids = body.get("ids")
        every = body.get("all") is True
        if every == (ids is not None):
            raise InvalidField("Send either 'ids' (a list of dead-lettered event ids) or 'all': true.")
        if ids is not None and (
            not isinstance(ids, list) or not 0 < len(ids) <= MAX_IDS or not all(isinstance(i, str) and i for i in ids)
        ):
            raise InvalidField(f"'ids' must be a list of 1 to {MAX_IDS} event ids.")
        count = await self.gateway.storage.requeue_events(None if every else ids, time.time())
        self.gateway.deliverer.wake()  # deliver now, not at the next poll
        self.audit("admin_events_retried", requeued=count, ids="all" if every else ids)
        self.write_json({"requeued": count})


class PurgeHandler(AdminAPIHandler):
    """POST {"older_than_seconds": N}: delete dead letters created more than N seconds ago
    (0: every dead letter). Only dead ones: deleting a pending event would lose a delivery."""

    async def post(self) -> None:
        body = self.json_body()
        age = require_int(body.get("older_than_seconds", 0), "older_than_seconds", 0, 3650 * 86400)
        count = await self.gateway.storage.purge_events("dead", time.time() - age)
        self.audit("admin_events_purged", status="dead", older_than_seconds=age, purged=count)
        self.write_json({"purged": count})
