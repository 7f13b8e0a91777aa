"""One contract for every storage: memory, mongo over PyMongo async, mongo over Motor.

The mongo cases talk to a real MongoDB wire-protocol server over a socket (the one
.ci/run starts, or one the suite starts); nothing of the driver is mocked.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from gateway.registry import Registry
from gateway.storage import AccessToken, LoginSession, OutboxEvent, PhoneBinding, SandboxUserRecord, Storage

BACKENDS = ["memory", "mongo-pymongo", "mongo-motor"]
KEY_A = "QUFBQUFBQUFBQUFBQUFBQQ=="
KEY_B = "QkJCQkJCQkJCQkJCQkJCQg=="
KEY_C = "Q0NDQ0NDQ0NDQ0NDQ0NDQw=="
STORAGE_KEY = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="


def storage_options(backend: str, mongo_uri: str, **extra: Any) -> tuple[type[Storage], Any]:
    storages = Registry.discover().storages
    if backend == "memory":
        cls = storages["memory"]
        return cls, cls.Options(**extra)
    cls = storages["mongo"]
    options = {
        "uri": mongo_uri,
        "database": "t" + uuid.uuid4().hex[:12],
        "driver": backend.removeprefix("mongo-"),
        "encryption_key": STORAGE_KEY,
        **extra,
    }
    return cls, cls.Options(**options)


@asynccontextmanager
async def open_storage(backend: str, mongo_uri: str, **extra: Any) -> AsyncIterator[Storage]:
    cls, options = storage_options(backend, mongo_uri, **extra)
    storage = cls(options)
    await storage.start()
    try:
        yield storage
    finally:
        await storage.close()


@pytest.fixture(params=BACKENDS)
def with_storage(request: pytest.FixtureRequest) -> Callable[[Callable[[Storage], Awaitable[None]]], None]:
    backend = request.param
    uri = request.getfixturevalue("mongo_uri") if backend != "memory" else ""

    def run(body: Callable[[Storage], Awaitable[None]]) -> None:
        async def main() -> None:
            async with open_storage(backend, uri) as storage:
                await body(storage)

        asyncio.run(main())

    return run


def event(event_id: str, now: float, **changes: Any) -> OutboxEvent:
    values: dict[str, Any] = {
        "id": event_id,
        "type": "user.login",
        "appid": "wxapp",
        "endpoint": "crm",
        "payload": {"openid": "o1", "n": 1},
        "created_at": now,
        "next_attempt_at": now,
    }
    values.update(changes)
    return OutboxEvent(**values)


def test_session_keys_rotate(with_storage: Any) -> None:
    async def body(s: Storage) -> None:
        assert await s.get_session_keys("wxapp", "o1") is None
        first = await s.rotate_session_key("wxapp", "o1", "u1", KEY_A)
        assert (first.session_key, first.previous_session_key, first.unionid) == (KEY_A, None, "u1")
        same = await s.rotate_session_key("wxapp", "o1", None, KEY_A)
        assert (same.session_key, same.previous_session_key) == (KEY_A, None)
        second = await s.rotate_session_key("wxapp", "o1", None, KEY_B)
        assert (second.session_key, second.previous_session_key, second.unionid) == (KEY_B, KEY_A, "u1")
        third = await s.rotate_session_key("wxapp", "o1", "u1", KEY_C)
        assert (third.session_key, third.previous_session_key) == (KEY_C, KEY_B)
        stored = await s.get_session_keys("wxapp", "o1")
        assert stored is not None
        assert (stored.session_key, stored.previous_session_key) == (KEY_C, KEY_B)
        assert await s.get_session_keys("wxother", "o1") is None

    with_storage(body)


def test_concurrent_rotations_stay_consistent(with_storage: Any) -> None:
    async def body(s: Storage) -> None:
        keys = [KEY_A, KEY_B, KEY_C]
        await asyncio.gather(*(s.rotate_session_key("wxapp", "race", None, keys[i % 3]) for i in range(12)))
        final = await s.get_session_keys("wxapp", "race")
        assert final is not None
        assert final.session_key in keys
        assert final.previous_session_key in keys
        assert final.previous_session_key != final.session_key

    with_storage(body)


def test_login_sessions(with_storage: Any) -> None:
    async def body(s: Storage) -> None:
        now = time.time()
        live = LoginSession("h1", "wxapp", "o1", "u1", now, now + 60)
        dead = LoginSession("h2", "wxapp", "o2", None, now - 120, now - 60)
        await s.put_login_session(live)
        await s.put_login_session(dead)
        got = await s.get_login_session("h1")
        assert got is not None
        assert (got.openid, got.unionid, got.expired()) == ("o1", "u1", False)
        assert got.expires_at == pytest.approx(now + 60, abs=0.01)
        expired = await s.get_login_session("h2")
        assert expired is None or expired.expired()
        assert await s.get_login_session("nope") is None

    with_storage(body)


def test_deleted_login_session_is_gone(with_storage: Any) -> None:
    async def body(s: Storage) -> None:
        now = time.time()
        await s.put_login_session(LoginSession("h-out", "wxapp", "o1", None, now, now + 60))
        await s.put_login_session(LoginSession("h-stay", "wxapp", "o1", None, now, now + 60))
        assert await s.delete_login_session("h-out") is True
        assert await s.get_login_session("h-out") is None
        assert await s.delete_login_session("h-out") is False  # a second revocation finds nothing
        assert await s.get_login_session("h-stay") is not None

    with_storage(body)


def test_login_sessions_of_a_user_are_listed_and_revoked_together(with_storage: Any) -> None:
    async def body(s: Storage) -> None:
        now = float(int(time.time()))  # a storage may keep times to the millisecond only: compare whole ones
        older = LoginSession("h-older", "wxapp", "o1", "u1", now - 10, now + 60)
        newer = LoginSession("h-newer", "wxapp", "o1", "u1", now, now + 120)
        await s.put_login_session(newer)
        await s.put_login_session(older)
        others = [
            LoginSession("h-other-user", "wxapp", "o2", None, now, now + 60),
            LoginSession("h-other-app", "wxother", "o1", None, now, now + 60),
        ]
        for session in others:
            await s.put_login_session(session)
        await s.put_login_session(LoginSession("h-expired", "wxapp", "o3", None, now - 120, now - 60))

        assert await s.list_login_sessions("wxapp", "o1") == [older, newer]  # oldest first
        assert await s.list_login_sessions("wxapp", "o3") == []  # expired: not live
        assert await s.list_login_sessions("wxapp", "nobody") == []

        assert await s.delete_login_sessions("wxapp", "o1") == 2
        assert await s.get_login_session("h-older") is None
        assert await s.get_login_session("h-newer") is None
        assert await s.list_login_sessions("wxapp", "o1") == []
        assert await s.delete_login_sessions("wxapp", "o1") == 0
        for session in others:  # another user's, another app's: untouched
            assert await s.get_login_session(session.token_hash) == session

    with_storage(body)


def test_users_upsert_keeps_first_seen(with_storage: Any) -> None:
    async def body(s: Storage) -> None:
        first = await s.upsert_user("wxapp", "o1", "u1", 100.0)
        assert (first.first_seen, first.last_seen, first.logins, first.unionid) == (100.0, 100.0, 1, "u1")
        again = await s.upsert_user("wxapp", "o1", None, 200.0)
        assert (again.first_seen, again.last_seen, again.logins, again.unionid) == (100.0, 200.0, 2, "u1")
        other_app = await s.upsert_user("wxother", "o1", None, 300.0)
        assert other_app.logins == 1
        got = await s.get_user("wxapp", "o1")
        assert got == again
        assert await s.get_user("wxapp", "nobody") is None

    with_storage(body)


def test_concurrent_first_logins_make_one_user(with_storage: Any) -> None:
    async def body(s: Storage) -> None:
        await asyncio.gather(*(s.upsert_user("wxapp", "crowd", "u", 10.0 + i) for i in range(20)))
        user = await s.get_user("wxapp", "crowd")
        assert user is not None
        assert user.logins == 20
        assert user.first_seen == 10.0  # the earliest, whichever insert won

    with_storage(body)


def test_phone_bindings(with_storage: Any) -> None:
    async def body(s: Storage) -> None:
        phone = PhoneBinding(key="13800001111", masked="138****1111", country_code="86", number="13800001111")
        await s.bind_phone("wxapp", "o1", phone, 100.0)
        await s.bind_phone("wxapp", "o1", phone, 150.0)
        other = PhoneBinding(key="hash-xyz", masked="139****2222", country_code="86")
        await s.bind_phone("wxapp", "o1", other, 200.0)
        phones = await s.get_phones("wxapp", "o1")
        assert [(p.key, p.first_seen, p.last_seen) for p in phones] == [
            ("13800001111", 100.0, 150.0),
            ("hash-xyz", 200.0, 200.0),
        ]
        assert phones[1].number is None
        assert phones[0].masked == "138****1111"
        assert await s.get_phones("wxapp", "o2") == []

    with_storage(body)


def test_access_tokens_and_leases(with_storage: Any) -> None:
    async def body(s: Storage) -> None:
        assert await s.get_access_token("wxapp") is None
        await s.put_access_token(AccessToken("wxapp", "tok-1", 1000.0))
        await s.put_access_token(AccessToken("wxapp", "tok-2", 2000.0))
        assert await s.get_access_token("wxapp") == AccessToken("wxapp", "tok-2", 2000.0)
        assert await s.acquire_lease("refresh:wxapp", "A", 5)
        assert not await s.acquire_lease("refresh:wxapp", "B", 5)
        assert await s.acquire_lease("refresh:wxapp", "A", 5)  # the holder may renew
        await s.release_lease("refresh:wxapp", "B")  # not the holder: no effect
        assert not await s.acquire_lease("refresh:wxapp", "B", 5)
        await s.release_lease("refresh:wxapp", "A")
        assert await s.acquire_lease("refresh:wxapp", "B", 0.2)
        assert not await s.acquire_lease("refresh:wxapp", "C", 5)
        await asyncio.sleep(0.3)
        assert await s.acquire_lease("refresh:wxapp", "C", 5)  # B's lease expired

    with_storage(body)


def test_one_lease_winner_under_contention(with_storage: Any) -> None:
    async def body(s: Storage) -> None:
        results = await asyncio.gather(*(s.acquire_lease("hot", f"owner-{i}", 10) for i in range(10)))
        assert sum(results) == 1

    with_storage(body)


def test_outbox_lifecycle(with_storage: Any) -> None:
    async def body(s: Storage) -> None:
        now = time.time()
        assert await s.enqueue_event(event("e1", now))
        assert not await s.enqueue_event(event("e1", now, payload={"changed": True}))
        assert await s.enqueue_event(event("e2", now + 1))
        assert await s.enqueue_event(event("later", now, next_attempt_at=now + 3600))

        claimed = await s.claim_events("w1", 10, 30, now + 2)
        assert sorted(e.id for e in claimed) == ["e1", "e2"]
        assert all(e.status == "delivering" and e.lease_owner == "w1" for e in claimed)
        assert claimed[0].payload in ({"openid": "o1", "n": 1},)
        assert await s.claim_events("w2", 10, 30, now + 2) == []  # leased

        await s.ack_event("e1", "w1", now + 3600)
        await s.retry_event("e2", "w1", now + 100, "HTTP 503")
        assert await s.claim_events("w2", 10, 30, now + 50) == []  # not due yet
        retried = await s.claim_events("w2", 10, 30, now + 101)
        assert [(e.id, e.attempts, e.last_error) for e in retried] == [("e2", 1, "HTTP 503")]
        # w2 dies holding e2: after its lease another worker takes it over
        taken_over = await s.claim_events("w3", 10, 30, now + 101 + 31)
        assert [e.id for e in taken_over] == ["e2"]
        await s.dead_letter_event("e2", "w3", "HTTP 400")

        statuses = {e.id: e.status for e in await s.list_events(None, 10)}
        assert statuses == {"e1": "delivered", "e2": "dead", "later": "pending"}
        dead = await s.list_events("dead", 10)
        assert [(e.id, e.attempts, e.last_error) for e in dead] == [("e2", 2, "HTTP 400")]

        assert await s.requeue_events(["nope"], now) == 0
        assert await s.requeue_events(None, now + 200) == 1
        # (claim a second later: the test wire server keeps only ~5 decimals of a float)
        again = await s.claim_events("w4", 10, 30, now + 201)
        assert [(e.id, e.attempts) for e in again] == [("e2", 0)]
        await s.ack_event("e2", "w4", now + 7200)
        purge_at = {e.id: e.purge_at for e in await s.list_events(None, 10)}
        assert purge_at["e1"] == pytest.approx(now + 3600, abs=0.001)  # kept to the millisecond
        assert purge_at["e2"] == pytest.approx(now + 7200, abs=0.001)
        assert purge_at["later"] is None  # only a delivered event has one
        assert await s.purge_events("delivered", now + 0.5) == 1  # e1 only: e2 was created later
        assert {e.id for e in await s.list_events(None, 10)} == {"e2", "later"}

    with_storage(body)


def test_claim_respects_limit_and_never_double_claims(with_storage: Any) -> None:
    async def body(s: Storage) -> None:
        now = time.time()
        for i in range(12):
            await s.enqueue_event(event(f"e{i:02d}", now))
        batches = await asyncio.gather(*(s.claim_events(f"w{i}", 5, 30, now + 1) for i in range(4)))
        ids = [e.id for batch in batches for e in batch]
        assert all(len(batch) <= 5 for batch in batches)
        assert len(ids) == 12
        assert len(set(ids)) == 12

    with_storage(body)


def sandbox_user(name: str, created_at: float, **changes: Any) -> SandboxUserRecord:
    values: dict[str, Any] = {
        "appid": "wxapp",
        "openid": "o-" + name,
        "name": name,
        "unionid": "u-" + name,
        "phone": "13800138000",
        "session_key": KEY_A,
        "logins": 1,
        "created_at": created_at,
    }
    values.update(changes)
    return SandboxUserRecord(**values)


def test_sandbox_users_are_kept_and_replaced(with_storage: Any) -> None:
    async def body(s: Storage) -> None:
        now = round(time.time(), 3)
        assert await s.get_sandbox_user("wxapp", "o-ann") is None
        await s.put_sandbox_user(sandbox_user("ann", now), max_users=10)
        assert await s.get_sandbox_user("wxapp", "o-ann") == sandbox_user("ann", now)
        again = sandbox_user("ann", now, session_key=KEY_B, logins=2)
        await s.put_sandbox_user(again, max_users=10)
        assert await s.get_sandbox_user("wxapp", "o-ann") == again
        assert await s.get_sandbox_user("wxother", "o-ann") is None

    with_storage(body)


def test_sandbox_users_beyond_max_users_drop_the_oldest_first(with_storage: Any) -> None:
    async def body(s: Storage) -> None:
        now = round(time.time(), 3)
        for i, name in enumerate("abcd"):
            await s.put_sandbox_user(sandbox_user(name, now + i), max_users=3)
        kept = [name for name in "abcd" if await s.get_sandbox_user("wxapp", "o-" + name) is not None]
        assert kept == ["b", "c", "d"]
        # a user stored again is not a new one: nobody is dropped for it
        await s.put_sandbox_user(sandbox_user("b", now + 1, logins=2), max_users=3)
        kept = [name for name in "abcd" if await s.get_sandbox_user("wxapp", "o-" + name) is not None]
        assert kept == ["b", "c", "d"]
        await s.put_sandbox_user(sandbox_user("e", now + 5), max_users=3)
        kept = [name for name in "abcde" if await s.get_sandbox_user("wxapp", "o-" + name) is not None]
        assert kept == ["c", "d", "e"]

    with_storage(body)


def test_sandbox_tokens_are_kept_per_app(with_storage: Any) -> None:
    async def body(s: Storage) -> None:
        now = time.time()
        assert await s.get_sandbox_tokens("wxapp") == {}
        await s.put_sandbox_tokens("wxapp", {"t1": now + 10, "t2": now + 20})
        assert await s.get_sandbox_tokens("wxapp") == {"t1": now + 10, "t2": now + 20}
        await s.put_sandbox_tokens("wxapp", {"t3": now + 30})
        assert await s.get_sandbox_tokens("wxapp") == {"t3": now + 30}
        assert await s.get_sandbox_tokens("wxother") == {}

    with_storage(body)
