"""Events for the rest of the user's system: written to the storage outbox in the
request, delivered later by :mod:`gateway.delivery`.

``emit`` writes one outbox record per subscribed endpoint. Given an idempotency
``key`` the event id is derived from it, so a client that retries a request gets no
second event; without one the id is random.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable
from typing import Any

from gateway.config import AppConfig, WebhooksConfig
from gateway.storage import OutboxEvent, Storage


class Events:
    def __init__(self, storage: Storage, webhooks: WebhooksConfig, wake: Callable[[], None] = lambda: None) -> None:
        self.storage = storage
        self.endpoints = webhooks.active
        self.wake = wake

    async def emit(self, event_type: str, app: AppConfig, payload: dict[str, Any], key: str | None = None) -> str:
        """Queue an event for every endpoint that wants ``event_type``; returns its id."""
        if key is not None:
            event_id = hashlib.sha256(f"{event_type}|{app.appid}|{key}".encode()).hexdigest()[:32]
        else:
            event_id = uuid.uuid4().hex
        now = time.time()
        # the envelope wins over the payload: a step cannot change an event's id or type
        body = {**payload, "id": event_id, "type": event_type, "app": app.name, "appid": app.appid, "time": int(now)}
        queued = False
        for endpoint in self.endpoints:
            if endpoint.events is None or event_type in endpoint.events:
                record = OutboxEvent(
                    id=f"{event_id}:{endpoint.name}",
                    type=event_type,
                    appid=app.appid,
                    endpoint=endpoint.name,
                    payload=body,
                    created_at=now,
                    next_attempt_at=now,
                )
                queued = await self.storage.enqueue_event(record) or queued
        if queued:
            self.wake()
        return event_id
