"""What only the mongo storage promises: sealed secrets, key rotation, embedded mode,
bounded failure when MongoDB is away. Real wire-protocol server, real sockets."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient
from structlog.testing import capture_logs

from gateway.config import parse_config
from gateway.errors import ConfigError, StorageUnavailable
from gateway.sealing import key_id, new_key_text, parse_key
from gateway.storage import AccessToken, LoginSession, OutboxEvent, PhoneBinding
from tests.helpers import free_port
from tests.test_round_trips import CommandCounter
from tests.test_storage_contract import KEY_A, KEY_B, KEY_C
from wxgate_plugins.storages.mongo import MongoOptions, MongoStorage


def mongo(uri: str, database: str, key: str, old: list[str] | None = None, **extra: Any) -> MongoStorage:
    options = MongoOptions(uri=uri, database=database, encryption_key=key, old_encryption_keys=old or [], **extra)
    return MongoStorage(options)


def test_secrets_are_sealed_at_rest(mongo_uri: str) -> None:
    key = new_key_text()
    db = "seal" + uuid.uuid4().hex[:8]

    async def main() -> None:
        storage = mongo(mongo_uri, db, key)
        await storage.start()
        try:
            await storage.rotate_session_key("wxapp", "o1", None, KEY_A)
            await storage.rotate_session_key("wxapp", "o1", None, KEY_B)
            await storage.put_access_token(AccessToken("wxapp", "ACCESS-TOKEN-VALUE", time.time() + 60))
            raw_keys = await storage.db.users.find_one({"appid": "wxapp", "openid": "o1"})
            raw_token = await storage.db.tokens.find_one({"_id": "wxapp"})
            text = repr(raw_keys) + repr(raw_token)
            for secret in (KEY_A, KEY_B, "ACCESS-TOKEN-VALUE"):
                assert secret not in text
            assert all(sealed.startswith(f"v1.{key_id(parse_key(key))}.") for sealed in raw_keys["keys"])
            # sealed keys copied onto another user's record do not open there: absent, logged
            copied = {name: raw_keys[name] for name in ("keys", "kid")}
            await storage.db.users.insert_one({"appid": "wxapp", "openid": "o2", **copied})
            with capture_logs() as logs:
                assert await storage.get_session_keys("wxapp", "o2") is None
            (rejected,) = [e for e in logs if e["event"] == "storage_record_rejected"]
            assert (rejected["collection"], rejected["id"]) == ("users", "wxapp:o2")
            assert raw_keys["keys"][-1] not in repr(rejected)
        finally:
            await storage.close()

    asyncio.run(main())


def test_key_rotation_old_records_open_new_writes_use_new_key(mongo_uri: str) -> None:
    old, new = new_key_text(), new_key_text()
    db = "rot" + uuid.uuid4().hex[:8]

    async def main() -> None:
        first = mongo(mongo_uri, db, old)
        await first.start()
        await first.rotate_session_key("wxapp", "o1", None, KEY_A)
        await first.close()

        rotated = mongo(mongo_uri, db, new, old=[old])
        await rotated.start()
        keys = await rotated.get_session_keys("wxapp", "o1")
        assert keys is not None
        assert keys.session_key == KEY_A
        await rotated.rotate_session_key("wxapp", "o1", None, KEY_B)
        raw = await rotated.db.users.find_one({"appid": "wxapp", "openid": "o1"})
        assert [sealed.split(".")[1] for sealed in raw["keys"]] == [key_id(parse_key(new))] * 2  # re-sealed on write
        await rotated.close()

        new_only = mongo(mongo_uri, db, new)
        await new_only.start()
        keys = await new_only.get_session_keys("wxapp", "o1")
        assert keys is not None
        assert (keys.session_key, keys.previous_session_key) == (KEY_B, KEY_A)
        await new_only.close()

        # without the key that wrote it, the record is absent (the user logs in again), not a 500
        old_only = mongo(mongo_uri, db, old)
        await old_only.start()
        with capture_logs() as logs:
            assert await old_only.get_session_keys("wxapp", "o1") is None
        assert [e["collection"] for e in logs if e["event"] == "storage_record_rejected"] == ["users"]
        await old_only.close()

    asyncio.run(main())


def test_unreachable_mongodb_is_storage_unavailable_quickly() -> None:
    storage = mongo(f"mongodb://127.0.0.1:{free_port()}/", "x", new_key_text(), timeout_ms=300)

    async def main() -> None:
        started = time.monotonic()
        with pytest.raises(StorageUnavailable):
            await storage.start()
        assert time.monotonic() - started < 5

    asyncio.run(main())


def test_embedded_mode_starts_its_own_server_and_keeps_a_private_key(tmp_path: Path) -> None:
    options = MongoOptions(uri="embedded", data_dir=str(tmp_path / "data"))
    storage = MongoStorage(options)

    async def main() -> None:
        await storage.start()
        try:
            await storage.upsert_user("wxapp", "o1", None, 1.0)
            assert storage.embedded is not None
            assert storage.uri is not None
            assert storage.uri.startswith("mongodb://127.0.0.1:")
        finally:
            await storage.close()

    asyncio.run(main())
    assert storage.embedded is not None
    assert storage.embedded.process is not None
    assert storage.embedded.process.poll() is not None  # stopped with the storage
    # the key beside the data, not in it: a copy of the data directory alone does not open it
    key_file = tmp_path / "keys" / "data.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert len(parse_key(key_file.read_text())) == 32
    assert not (tmp_path / "data" / "storage.key").exists()
    assert (tmp_path / "data" / "wxgate.db").is_file()

    again = MongoStorage(options)

    async def reopen() -> None:
        await again.start()
        try:
            user = await again.get_user("wxapp", "o1")
            assert user is not None
            assert user.first_seen == 1.0
        finally:
            await again.close()

    asyncio.run(reopen())


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ('{uri: "mongodb://db:27017"}', "'auto' only works with uri: embedded"),
        ('{uri: "mongodb://db:27017", encryption_key: "c2hvcnQ="}', "32 bytes"),
        ('{uri: "postgres://db"}', "expected 'embedded' or a mongodb://"),
        ("{driver: mongoengine}", "'pymongo' or 'motor'"),
    ],
)
def test_option_errors_name_the_line(options: str, message: str) -> None:
    app = "{appid: wxa00000000000000, secret: s, upstream: sandbox}"
    text = f"storage:\n  plugin: mongo\n  options: {options}\napps:\n  a: {app}\n"
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "x.yaml")
    assert str(caught.value).startswith("x.yaml:3: storage.options.")
    assert message in str(caught.value)
    assert "c2hvcnQ=" not in str(caught.value)  # a key is never echoed


# The session keys live in the user's record (layout 2); these replace the layout-1 cases of
# tests/test_storage_macs.py that tampered with the session_keys collection.


def test_a_tampered_session_key_is_absent_not_a_500(mongo_uri: str) -> None:
    async def body(storage: MongoStorage, db: Any) -> None:
        await storage.rotate_session_key("wxapp", "o1", "u1", KEY_A)
        raw = db.users.find_one({"appid": "wxapp", "openid": "o1"})
        version, kid, blob = raw["keys"][-1].split(".")
        # flip a byte of the ciphertext itself: a base64 character near the end may carry only padding bits,
        # and changing those leaves the decoded value as it was
        damaged = bytearray(base64.b64decode(blob))
        damaged[-1] ^= 0x01
        flipped = base64.b64encode(bytes(damaged)).decode()
        assert flipped != blob
        db.users.update_one({"_id": raw["_id"]}, {"$set": {"keys": [f"{version}.{kid}.{flipped}"]}})
        with capture_logs() as logs:
            assert await storage.get_session_keys("wxapp", "o1") is None
        assert [(r["collection"], r["id"]) for r in rejections(logs)] == [("users", "wxapp:o1")]
        assert raw["keys"][-1] not in repr(logs)
        # the next login replaces the rejected key: nothing of it is kept
        fresh = await storage.rotate_session_key("wxapp", "o1", None, KEY_B)
        assert (fresh.session_key, fresh.previous_session_key, fresh.unionid) == (KEY_B, None, None)
        again = await storage.get_session_keys("wxapp", "o1")
        assert again is not None
        assert (again.session_key, again.previous_session_key) == (KEY_B, None)
        assert len(db.users.find_one({"_id": raw["_id"]})["keys"]) == 1

    run_with_attacker(mongo_uri, body)


def test_a_session_keys_unionid_cannot_be_changed(mongo_uri: str) -> None:
    """check_session hands the unionid of the session keys to answers and signed webhooks:
    the one sealed with the key counts, not the record's plain field (kept for queries)."""

    async def body(storage: MongoStorage, db: Any) -> None:
        await storage.rotate_session_key("wxapp", "o1", "u-real", KEY_A)
        db.users.update_one({"appid": "wxapp", "openid": "o1"}, {"$set": {"unionid": "u-victim"}})
        keys = await storage.get_session_keys("wxapp", "o1")
        assert keys is not None
        assert keys.unionid == "u-real"
        # a record whose keys are not a gateway's is replaced by the next login
        db.users.insert_one({"appid": "wxapp", "openid": "o2", "keys": ["junk"]})
        with capture_logs():
            assert await storage.get_session_keys("wxapp", "o2") is None
            replaced = await storage.rotate_session_key("wxapp", "o2", None, KEY_B)
        assert (replaced.session_key, replaced.previous_session_key) == (KEY_B, None)
        stored = await storage.get_session_keys("wxapp", "o2")
        assert stored is not None
        assert stored.session_key == KEY_B

    run_with_attacker(mongo_uri, body)


def test_one_command_logs_in_and_one_reads_a_session(mongo_uri: str) -> None:
    """login_user (a login: key and user) and get_login (a request: session, keys and phone)."""
    database = "one" + uuid.uuid4().hex[:8]
    counter = CommandCounter(database)

    async def main() -> None:
        storage = mongo(mongo_uri, database, new_key_text())
        storage.event_listeners.append(counter)
        await storage.start()
        try:
            counter.commands.clear()
            keys, user = await storage.login_user("wxapp", "o1", "u1", KEY_A, 100.0)
            assert (keys.session_key, keys.previous_session_key, user.logins, user.first_seen) == (
                KEY_A,
                None,
                1,
                100.0,
            )
            keys, user = await storage.login_user("wxapp", "o1", None, KEY_B, 200.0)
            assert (keys.session_key, keys.previous_session_key, keys.unionid) == (KEY_B, KEY_A, "u1")
            assert (user.logins, user.first_seen, user.last_seen) == (2, 100.0, 200.0)
            assert len(counter.commands) == 2
            # the same key again (WeChat kept it): counted, keys unchanged, two commands
            keys, user = await storage.login_user("wxapp", "o1", None, KEY_B, 300.0)
            assert (keys.session_key, keys.previous_session_key, user.logins) == (KEY_B, KEY_A, 3)
            await storage.bind_phone("wxapp", "o1", PhoneBinding("k1", "138****1111", "86", None), 300.0)
            await storage.bind_phone("wxapp", "o1", PhoneBinding("k2", "139****2222", "86", None), 400.0)
            now = time.time()
            await storage.put_login_session(LoginSession("h1", "wxapp", "o1", "u1", now, now + 60))
            # another app's user with the same openid is not mistaken for this one
            await storage.login_user("wxother", "o1", None, KEY_C, 500.0)
            counter.commands.clear()
            found = await storage.get_login("h1")
            assert counter.commands == [("aggregate", "sessions")]
            assert found is not None
            session, found_keys = found
            assert found_keys == keys
            assert session.bound_phone is not None
            assert (session.bound_phone.masked, session.bound_phone.key) == ("139****2222", "k2")
            assert await storage.get_login("h-none") is None
        finally:
            await storage.close()

    asyncio.run(main())


def run_with_attacker(uri: str, body: Any) -> None:
    database = "mac" + uuid.uuid4().hex[:10]

    async def main() -> None:
        storage = mongo(uri, database, new_key_text())
        await storage.start()
        client: MongoClient[dict[str, Any]] = MongoClient(uri, serverSelectionTimeoutMS=5000)
        try:
            await body(storage, client[database])
        finally:
            client.close()
            await storage.close()

    asyncio.run(main())


def rejections(logs: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [entry for entry in logs if entry["event"] == "storage_record_rejected"]


def test_keys_join_a_record_made_without_them(mongo_uri: str) -> None:
    """A user recorded by upsert_user or bind_phone alone (no key yet) gets keys at login."""

    async def body(storage: MongoStorage, db: Any) -> None:
        await storage.upsert_user("wxapp", "o1", None, 10.0)
        await storage.bind_phone("wxapp", "o2", PhoneBinding("k", "138****1111", "86"), 10.0)
        keys, user = await storage.login_user("wxapp", "o1", None, KEY_A, 20.0)
        assert (keys.session_key, user.logins, user.first_seen, user.last_seen) == (KEY_A, 2, 10.0, 20.0)
        keys = await storage.rotate_session_key("wxapp", "o2", "u2", KEY_B)
        assert (keys.session_key, keys.previous_session_key, keys.unionid) == (KEY_B, None, "u2")
        assert [p.key for p in await storage.get_phones("wxapp", "o2")] == ["k"]
        assert await storage.find_phone_owners("wxapp", "k") == ["o2"]
        assert await storage.find_phone_owners("wxother", "k") == []
        assert await storage.get_user("wxapp", "o2") is None  # keys and phones are not a login

    run_with_attacker(mongo_uri, body)


def user_update_filters(counter: CommandCounter) -> list[dict[str, Any]]:
    """The filter of every update of ``users`` the counter saw."""
    return [dict(u["q"]) for c in counter.sent if c.get("update") == "users" for u in c["updates"]]


def test_the_phone_is_written_by_the_record_id_the_process_last_saw(mongo_uri: str) -> None:
    """After a login or a session read in this process, the phone's write selects the user's
    record by _id (cheaper on the embedded server than the (appid, openid) index); a record
    deleted and made again meanwhile still gets the phone (by appid and openid)."""
    database = "rid" + uuid.uuid4().hex[:8]
    key = new_key_text()
    phone = PhoneBinding("k1", "138****1111", "86", "13800001111")

    async def main() -> None:
        seen = [CommandCounter(database) for _ in range(2)]
        first, second = (mongo(mongo_uri, database, key) for _ in range(2))
        for storage, listener in zip((first, second), seen, strict=True):
            storage.event_listeners.append(listener)
            await storage.start()
        client: MongoClient[dict[str, Any]] = MongoClient(mongo_uri, serverSelectionTimeoutMS=5000)
        users: Any = client[database].users
        try:
            await first.login_user("wxapp", "o1", None, KEY_A, time.time())
            record_id = users.find_one({"openid": "o1"})["_id"]
            await first.bind_phone("wxapp", "o1", phone, time.time())
            assert user_update_filters(seen[0]) == [{"_id": record_id}]
            # another process that only read the session (the test server joins the id as text)
            now = time.time()
            await first.put_login_session(LoginSession("h1", "wxapp", "o1", None, now, now + 60))
            assert await second.get_login("h1") is not None
            await second.bind_phone("wxapp", "o1", phone, time.time())
            assert user_update_filters(seen[1]) == [{"_id": record_id}]
            # the record deleted and made again: the remembered id matches nothing; the phone lands
            users.delete_one({"_id": record_id})
            await first.login_user("wxapp", "o1", None, KEY_B, time.time())
            seen[1].sent.clear()
            await second.bind_phone("wxapp", "o1", phone, time.time())
            assert user_update_filters(seen[1]) == [{"_id": record_id}, {"appid": "wxapp", "openid": "o1"}]
            assert [p.key for p in await second.get_phones("wxapp", "o1")] == ["k1"]
            # an unknown user: by appid and openid from the start
            seen[1].sent.clear()
            await second.bind_phone("wxapp", "o2", phone, time.time())
            assert user_update_filters(seen[1]) == [{"appid": "wxapp", "openid": "o2"}]
        finally:
            client.close()
            await first.close()
            await second.close()

    asyncio.run(main())


def test_the_sweep_removes_expired_sessions_only(mongo_uri: str) -> None:
    async def body(storage: MongoStorage, db: Any) -> None:
        now = time.time()
        for name, expires in (("h-old", now - 3600), ("h-just", now - 1), ("h-live", now + 60)):
            await storage.put_login_session(LoginSession(name, "wxapp", "o1", None, now - 7200, expires))
        assert await storage.sweep_expired_sessions(now) == 2
        assert sorted(d["_id"] for d in db.sessions.find({})) == ["h-live"]
        assert not [index for index in db.sessions.list_indexes() if "expireAfterSeconds" in index]

    run_with_attacker(mongo_uri, body)


def test_a_claim_selects_on_due_at_alone(mongo_uri: str) -> None:
    """Claims select on one indexed field that only waiting events have: delivered and dead
    events are not in that index, so a claim does not grow with the outbox (the embedded
    server reads the whole outbox for a query on status and time)."""
    database = "due" + uuid.uuid4().hex[:8]
    listener = CommandCounter(database)

    async def main() -> None:
        storage = mongo(mongo_uri, database, new_key_text())
        storage.event_listeners.append(listener)
        await storage.start()
        client: MongoClient[dict[str, Any]] = MongoClient(mongo_uri, serverSelectionTimeoutMS=5000)
        outbox: Any = client[database].outbox
        try:
            now = time.time()
            for name in ("a:crm", "b:crm", "c:crm"):
                event = OutboxEvent(name, "phone.bound", "wxapp", "crm", {"n": 1}, now, next_attempt_at=now)
                await storage.enqueue_event(event)
            listener.sent.clear()
            a, b, c = await storage.claim_events("w1", 3, 30, now + 1)
            claims = [dict(c["query"]) for c in listener.sent if c.get("findAndModify") == "outbox"]
            assert claims == [{"due_at": {"$lte": now + 1}}] * 3
            # delivering: due when the lease ends; delivered and dead: not due at all
            assert outbox.find_one({"_id": a.id})["due_at"] == pytest.approx(now + 31, abs=2)
            await storage.ack_event(a.id, "w1", now + 3600)
            await storage.dead_letter_event(b.id, "w1", "HTTP 400")
            await storage.retry_event(c.id, "w1", now + 50, "HTTP 503")
            due = {d["_id"]: d.get("due_at") for d in outbox.find({})}
            assert due == {a.id: None, b.id: None, c.id: pytest.approx(now + 50, abs=0.01)}
            assert await storage.claim_events("w1", 3, 30, now + 49) == []
            assert [e.id for e in await storage.claim_events("w1", 3, 30, now + 51)] == [c.id]
            # an expired lease makes it due again; a requeued dead letter is due at once
            assert [e.id for e in await storage.claim_events("w2", 3, 30, now + 200)] == [c.id]
            assert await storage.requeue_events([b.id], now + 300) == 1
            # (c's lease from w2 ended at now + 230: it is due again too, and first)
            assert [e.id for e in await storage.claim_events("w3", 3, 30, now + 301)] == [c.id, b.id]
        finally:
            client.close()
            await storage.close()

    asyncio.run(main())


def test_what_a_layout_2_wxgate_writes_after_the_migration_is_set_right(mongo_uri: str) -> None:
    """A wxgate of layout 2 still running after the database was migrated writes status and
    times but no due_at, and recreates its indexes: a delivered or dead event keeps a due_at
    in the past, an event it leased keeps an old one, one it enqueued has none. None of them is
    sent again or twice, the new one is delivered, and the next start drops the old indexes."""
    database = "old" + uuid.uuid4().hex[:8]
    key = new_key_text()

    async def main() -> None:
        storage = mongo(mongo_uri, database, key)
        await storage.start()
        client: MongoClient[dict[str, Any]] = MongoClient(mongo_uri, serverSelectionTimeoutMS=5000)
        db: Any = client[database]
        try:
            now = time.time()
            names = ("acked:crm", "dead:crm", "leased:crm", "new:crm")
            for name in names:
                event = OutboxEvent(name, "phone.bound", "wxapp", "crm", {"n": 1}, now - 60, next_attempt_at=now - 60)
                await storage.enqueue_event(event)
            # what the layout-2 code does: $set only
            db.outbox.update_one({"_id": "acked:crm"}, {"$set": {"status": "delivered", "lease_until": 0.0}})
            db.outbox.update_one({"_id": "dead:crm"}, {"$set": {"status": "dead", "lease_until": 0.0}})
            db.outbox.update_one(
                {"_id": "leased:crm"},
                {"$set": {"status": "delivering", "lease_owner": "old", "lease_until": now + 300}},
            )
            db.outbox.update_one({"_id": "new:crm"}, {"$unset": {"due_at": ""}})
            with capture_logs() as logs:
                assert await storage.claim_events("w1", 10, 30, now) == []  # nothing really due yet
            restored = sorted(e["id"] for e in logs if e["event"] == "outbox_due_at_restored")
            assert restored == ["acked:crm", "dead:crm", "leased:crm"]
            state = {d["_id"]: (d["status"], d.get("due_at"), d.get("lease_owner")) for d in db.outbox.find({})}
            assert state["acked:crm"] == ("delivered", None, None)
            assert state["dead:crm"] == ("dead", None, None)
            assert state["leased:crm"][0::2] == ("delivering", "old")
            assert state["leased:crm"][1] == pytest.approx(now + 300, abs=0.01)
            # the old wxgate recreates its indexes, and the next start settles what it wrote
            db.sessions.create_index([("expire_at", 1)], expireAfterSeconds=0)
            db.outbox.create_index([("status", 1), ("next_attempt_at", 1)])
            again = mongo(mongo_uri, database, key)
            with capture_logs() as logs:
                await again.start()
            try:
                (settled,) = [e for e in logs if e["event"] == "storage_layout_3_settled"]
                assert settled["waiting_events"] == 1
                assert len(settled["indexes_dropped"]) == 2
                assert [e.id for e in await again.claim_events("w2", 10, 30, now)] == ["new:crm"]
                # leased:crm stays the old process's until its lease ends
                assert await again.claim_events("w2", 10, 30, now + 20) == []
                assert [e.id for e in await again.claim_events("w2", 10, 30, now + 301)] == ["new:crm", "leased:crm"]
            finally:
                await again.close()
        finally:
            client.close()
            await storage.close()

    asyncio.run(main())
