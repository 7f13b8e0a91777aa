"""webhooks.retention: a delivered event gets a purge_at (delivery time + retention) and is
removed after it; pending and dead events stay.

The mongo cases run against the MongoDB wire-protocol server of the suite (nx-27017). It
honours TTL indexes (a document whose purge_at has passed is gone within seconds there;
real MongoDB's TTL monitor takes up to a minute), so besides the field and the index
definition the removal itself is checked.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from gateway.config import Config, WebhooksConfig, parse_config
from gateway.delivery import Deliverer
from gateway.errors import ConfigError
from gateway.registry import Registry
from gateway.storage import Storage
from tests.test_storage_contract import event, open_storage
from wxgate_plugins.storages.memory import MemoryStorage

FILE = "gw.yaml"
REGISTRY = Registry.discover()
APP = """apps:
  demo:
    appid: wx1234567890
    secret: s3cr3t
    upstream: sandbox
"""
DAY = 86400.0


def parse(webhooks: str, env: dict[str, str] | None = None) -> Config:
    return parse_config(f"webhooks:\n{webhooks}{APP}", FILE, REGISTRY, env=env or {})


# --- the configuration ------------------------------------------------------------------


def test_retention_defaults_to_seven_days() -> None:
    assert WebhooksConfig().retention == 7 * DAY
    assert parse("  max_attempts: 3\n").webhooks.retention == 7 * DAY


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("7d", 7 * DAY), ("12h", 43200.0), ("30m", 1800.0), ("3600s", 3600.0), ("3600", 3600.0), ("1.5h", 5400.0)],
)
def test_retention_accepts_durations(text: str, seconds: float) -> None:
    assert parse(f"  retention: {text}\n").webhooks.retention == seconds


def test_retention_accepts_a_duration_from_the_environment() -> None:
    config = parse("  retention: ${WXGATE_RETENTION:-7d}\n", env={"WXGATE_RETENTION": "2h"})
    assert config.webhooks.retention == 7200.0
    assert parse("  retention: ${WXGATE_RETENTION:-7d}\n").webhooks.retention == 7 * DAY


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7w", "expected a duration such as 7d, 12h, 30m or 3600s, or a number of seconds (got '7w')"),
        ("soon", "expected a duration such as 7d, 12h, 30m or 3600s, or a number of seconds (got 'soon')"),
        ("-5", "expected a duration above 0 and at most 3650d, such as 7d, 12h, 30m or 3600s (got -5)"),
        ("true", "expected a duration such as 7d, 12h, 30m or 3600s, or a number of seconds (got True)"),
        ("0", "expected a duration above 0 and at most 3650d"),
        ("0s", "expected a duration above 0 and at most 3650d"),
        ("9999d", "expected a duration above 0 and at most 3650d"),
    ],
)
def test_retention_refuses_other_values_naming_file_line_and_key(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as exc_info:
        parse(f"  max_attempts: 3\n  retention: {text}\n")
    message = str(exc_info.value)
    assert message.startswith(f"{FILE}:3: webhooks.retention: "), message
    assert expected in message


# --- delivery sets purge_at from the configured retention ---------------------------------


class _Answer:
    code = 204
    headers: dict[str, str] = {}


class _Http:
    """Answers every delivery 204, as a receiver that took the event."""

    def __init__(self) -> None:
        self.sent = 0

    async def fetch(self, request: Any, raise_error: bool = True) -> _Answer:
        self.sent += 1
        return _Answer()


def _settings(retention: str) -> WebhooksConfig:
    endpoint = {"name": "crm", "url": "http://127.0.0.1:9/hook", "secret": "crm-secret-0123456789"}
    return WebhooksConfig.model_validate({"endpoints": [endpoint], "retention": retention})


async def _deliver_one(deliverer: Deliverer, storage: Storage, event_id: str) -> None:
    now = time.time()
    assert await storage.enqueue_event(event(event_id, now))
    claimed = await storage.claim_events(deliverer.owner, 10, 30, now + 1)
    assert [e.id for e in claimed] == [event_id]
    await deliverer._deliver(claimed[0])


@pytest.fixture(params=["memory", "mongo-pymongo"])
def with_storage(request: pytest.FixtureRequest) -> Callable[[Callable[[Storage], Awaitable[None]]], None]:
    backend = request.param
    uri = request.getfixturevalue("mongo_uri") if backend != "memory" else ""

    def run(body: Callable[[Storage], Awaitable[None]]) -> None:
        async def main() -> None:
            async with open_storage(backend, uri) as storage:
                await body(storage)

        asyncio.run(main())

    return run


def test_delivery_sets_purge_at_from_the_retention_and_a_reload_changes_it(with_storage: Any) -> None:
    async def body(s: Storage) -> None:
        http = _Http()
        deliverer = Deliverer(s, _settings("12h"), http=http)  # type: ignore[arg-type]
        before = time.time()
        await _deliver_one(deliverer, s, "e1")
        after = time.time()
        # a reload: events delivered from now on get the new retention, e1 keeps its own
        deliverer.reconfigure(_settings("30m"))
        await _deliver_one(deliverer, s, "e2")
        assert http.sent == 2
        stored = {e.id: e for e in await s.list_events(None, 10)}
        assert stored["e1"].status == "delivered"
        assert stored["e1"].purge_at is not None
        assert before + 43200 - 0.01 <= stored["e1"].purge_at <= after + 43200 + 0.01
        assert stored["e2"].purge_at is not None
        assert stored["e2"].purge_at == pytest.approx(time.time() + 1800, abs=5)

    with_storage(body)


def test_pending_and_dead_events_have_no_purge_at(with_storage: Any) -> None:
    async def body(s: Storage) -> None:
        now = time.time()
        await s.enqueue_event(event("pending", now))
        await s.enqueue_event(event("dead", now))
        await s.claim_events("w1", 10, 30, now + 1)
        await s.dead_letter_event("dead", "w1", "HTTP 400")
        await s.retry_event("pending", "w1", now + 3600, "HTTP 503")
        assert {e.id: e.purge_at for e in await s.list_events(None, 10)} == {"pending": None, "dead": None}

    with_storage(body)


# --- memory: the sweep ----------------------------------------------------------------------


def test_memory_sweep_removes_expired_delivered_events_only() -> None:
    async def main() -> None:
        s = MemoryStorage(MemoryStorage.Options())
        now = time.time()
        old = now - 30 * DAY  # created long ago: age alone removes nothing
        for event_id in ("soon", "later", "dead", "pending", "leased"):
            await s.enqueue_event(event(event_id, old, next_attempt_at=old))
        await s.claim_events("w1", 10, 30, now)
        await s.ack_event("soon", "w1", now + 60)
        await s.ack_event("later", "w1", now + 3600)
        await s.dead_letter_event("dead", "w1", "HTTP 400")
        await s.retry_event("pending", "w1", now + 10 * DAY, "HTTP 503")
        # "leased" stays delivering: its lease runs out at now + 30

        assert len(s.events) == 5  # nothing due yet
        assert await s.claim_events("w2", 10, 30, now + 20) == []
        assert set(s.events) == {"soon", "later", "dead", "pending", "leased"}

        await s.claim_events("w2", 10, 30, now + 61)  # the sweep runs during claims; takes "leased" over
        assert set(s.events) == {"later", "dead", "pending", "leased"}

        await s.claim_events("w3", 10, 30, now + 20 * DAY)  # long after: only delivered ones ever go
        assert set(s.events) == {"dead", "pending", "leased"}
        assert s.events["dead"].status == "dead"
        assert not s._purges

    asyncio.run(main())


def test_memory_sweep_runs_on_ack_and_skips_purged_or_requeued_events() -> None:
    async def main() -> None:
        s = MemoryStorage(MemoryStorage.Options())
        now = time.time()
        for event_id in ("a", "b", "c"):
            await s.enqueue_event(event(event_id, now))
        await s.claim_events("w1", 10, 30, now)
        await s.ack_event("a", "w1", now - 1)  # already past: the ack's own sweep removes it
        assert "a" not in s.events
        await s.ack_event("b", "w1", now - 1)
        assert "b" not in s.events
        # an event purged by an operator leaves a stale heap entry, dropped by the sweep
        await s.ack_event("c", "w1", now + 10)
        assert await s.purge_events("delivered", now + 1) == 1
        await s.enqueue_event(event("c", now))  # the same id queued again: pending, not swept
        await s.claim_events("w2", 0, 30, now + 20)
        assert s.events["c"].status == "pending"
        assert not s._purges
        await s.ack_event("missing", "w1", now - 1)  # no such event: nothing recorded
        assert not s._purges

    asyncio.run(main())


# --- mongo: the TTL index -------------------------------------------------------------------


def test_mongo_has_a_ttl_index_on_purge_at_and_removes_expired_events(mongo_uri: str) -> None:
    async def main() -> None:
        async with open_storage("mongo-pymongo", mongo_uri) as s:
            db: Any = s.db  # type: ignore[attr-defined]
            indexes = [dict(ix) async for ix in await db.outbox.list_indexes()]
            ttl = [ix for ix in indexes if list(ix["key"]) == ["purge_at"]]
            assert len(ttl) == 1, indexes
            assert ttl[0].get("expireAfterSeconds") == 0

            now = time.time()
            for event_id in ("gone", "kept", "dead", "pending"):
                await s.enqueue_event(event(event_id, now - 30 * DAY))
            await s.claim_events("w1", 10, 30, now)
            await s.ack_event("gone", "w1", now - 1)
            await s.ack_event("kept", "w1", now + 3600)
            await s.dead_letter_event("dead", "w1", "HTTP 400")
            await s.retry_event("pending", "w1", now + 3600, "HTTP 503")
            doc = await db.outbox.find_one({"_id": "kept"})
            assert doc is not None
            assert s._event_rejection(doc) is None  # type: ignore[attr-defined]  # purge_at is outside the MAC

            # nx-27017 honours the index within seconds (MongoDB within about a minute)
            deadline = time.monotonic() + 30
            while await db.outbox.find_one({"_id": "gone"}) is not None:
                assert time.monotonic() < deadline, "the TTL index did not remove the expired event"
                await asyncio.sleep(0.5)
            assert {e.id for e in await s.list_events(None, 10)} == {"kept", "dead", "pending"}

    asyncio.run(main())
