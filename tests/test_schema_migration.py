"""A database written by the layout before the schema-version document (layout 1) is
migrated at start: by one process under a lease, the others waiting; a database of a
newer schema is refused. The layout-1 records are written here directly, in the exact
shapes that layout's code wrote (sealed keys, MACs and all), on the real wire-protocol
server."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from pymongo import MongoClient
from structlog.testing import capture_logs

from gateway.errors import ConfigError
from gateway.sealing import KeyRing, new_key_text, parse_key
from gateway.storage import LoginSession, OutboxEvent
from tests.test_storage_contract import KEY_A, KEY_B, KEY_C
from wxgate_plugins.storages.mongo import MongoOptions, MongoStorage
from wxgate_plugins.storages.mongo_schema import SCHEMA_VERSION


def write_layout_1(uri: str, database: str, key: str) -> None:
    """What the layout-1 code stored for: a user with two keys, two phones and a session;
    a session from before MACs; a user whose keys fail their MAC."""
    ring = KeyRing(parse_key(key))
    now = round(time.time(), 3)
    client: MongoClient[dict[str, Any]] = MongoClient(uri, serverSelectionTimeoutMS=5000)
    db = client[database]
    try:
        for openid, unionid, key_now, prev in (("o1", "u1", KEY_B, KEY_A), ("o3", None, KEY_C, None)):
            record_id = f"wxapp:{openid}"
            record = {
                "unionid": unionid,
                "key": ring.seal(key_now, record_id),
                "prev": ring.seal(prev, record_id) if prev else None,
                "updated_at": now,
            }
            fields = {**record, "updated_at": round(now * 1000)}
            db.session_keys.insert_one(
                {"_id": record_id, **record, "mac": ring.mac("session_keys", record_id, fields), "v": 2}
            )
        db.session_keys.update_one({"_id": "wxapp:o3"}, {"$set": {"unionid": "u-forged"}})  # fails its MAC now
        db.users.insert_one(
            {"appid": "wxapp", "openid": "o1", "unionid": "u1", "first_seen": 100.0, "last_seen": 200.0, "logins": 4}
        )
        for number, seen in (("13800001111", 150.0), ("13900002222", 250.0)):
            db.phones.insert_one(
                {
                    "appid": "wxapp",
                    "openid": "o1",
                    "key": "+86" + number,
                    "first_seen": seen,
                    "masked": number[:3] + "****" + number[-4:],
                    "country_code": "86",
                    "number": number,
                    "last_seen": seen,
                }
            )
        session: dict[str, Any] = {
            "appid": "wxapp",
            "openid": "o1",
            "unionid": "u1",
            "created_at": now,
            "expires_at": now + 3600,
        }
        fields = {**session, "created_at": round(now * 1000), "expires_at": round((now + 3600) * 1000)}
        db.sessions.insert_one({"_id": "h-live", **session, "mac": ring.mac("sessions", "h-live", fields)})
        db.sessions.insert_one({"_id": "h-before-macs", **session})
    finally:
        client.close()


def storage(uri: str, database: str, key: str) -> MongoStorage:
    return MongoStorage(MongoOptions(uri=uri, database=database, encryption_key=key))


def test_layout_1_is_migrated_and_its_records_still_work(mongo_uri: str) -> None:
    database, key = "mig" + uuid.uuid4().hex[:10], new_key_text()
    write_layout_1(mongo_uri, database, key)

    async def main() -> None:
        new = storage(mongo_uri, database, key)
        with capture_logs() as logs:
            await new.start()
        try:
            assert [e["event"] for e in logs if e["event"] == "storage_schema_migrated"] == ["storage_schema_migrated"]
            # the user's session works: keys, unionid and the phone bound last, in one read
            found = await new.get_login("h-live")
            assert found is not None
            session, keys = found
            assert keys is not None
            assert (keys.session_key, keys.previous_session_key, keys.unionid) == (KEY_B, KEY_A, "u1")
            assert session.bound_phone is not None
            assert session.bound_phone.masked == "139****2222"
            user = await new.get_user("wxapp", "o1")
            assert user is not None
            assert (user.first_seen, user.last_seen, user.logins) == (100.0, 200.0, 4)
            phones = await new.get_phones("wxapp", "o1")
            assert [(p.number, p.first_seen) for p in phones] == [("13800001111", 150.0), ("13900002222", 250.0)]
            # absent before the upgrade, absent after it: not blessed by the migration
            with capture_logs():
                assert await new.get_login("h-before-macs") is None
                assert await new.get_session_keys("wxapp", "o3") is None
            # the next login continues from the migrated pair
            keys, user = await new.login_user("wxapp", "o1", None, KEY_C, 300.0)
            assert (keys.session_key, keys.previous_session_key, keys.unionid, user.logins) == (KEY_C, KEY_B, "u1", 5)
            names = await new.db.list_collection_names()
            assert "session_keys" not in names
            assert "phones" not in names
            assert (await new.db.meta.find_one({"_id": "schema"}))["version"] == SCHEMA_VERSION
        finally:
            await new.close()
        # a restart finds the version and migrates nothing
        again = storage(mongo_uri, database, key)
        with capture_logs() as logs:
            await again.start()
        await again.close()
        assert not [e for e in logs if e["event"] == "storage_schema_migrated"]

    asyncio.run(main())


def test_one_process_migrates_the_others_wait(mongo_uri: str) -> None:
    database, key = "mig" + uuid.uuid4().hex[:10], new_key_text()
    write_layout_1(mongo_uri, database, key)

    async def main() -> None:
        processes = [storage(mongo_uri, database, key) for _ in range(3)]
        with capture_logs() as logs:
            await asyncio.gather(*(p.start() for p in processes))
        try:
            assert len([e for e in logs if e["event"] == "storage_schema_migrated"]) == 1
            for p in processes:  # every one of them serves the migrated records
                keys = await p.get_session_keys("wxapp", "o1")
                assert keys is not None
                assert keys.session_key == KEY_B
        finally:
            for p in processes:
                await p.close()

    asyncio.run(main())


def test_a_newer_schema_is_refused_at_start(mongo_uri: str) -> None:
    database, key = "mig" + uuid.uuid4().hex[:10], new_key_text()
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_uri, serverSelectionTimeoutMS=5000)
    client[database].meta.insert_one({"_id": "schema", "version": SCHEMA_VERSION + 1})
    client.close()

    async def main() -> None:
        newer = storage(mongo_uri, database, key)
        with pytest.raises(ConfigError, match=f"schema {SCHEMA_VERSION + 1}, newer than this wxgate knows"):
            await newer.start()
        await newer.close()

    asyncio.run(main())


def test_layout_2_loses_the_sessions_ttl_index_and_keeps_its_sessions(mongo_uri: str) -> None:
    """Layout 2 (made here by the storage itself, then set back to what layout 2 had: version 2
    and a TTL index on sessions) becomes layout 3: the TTL index goes, the sessions stay
    readable, and the expired ones are the sweep's to remove."""
    database, key = "mig" + uuid.uuid4().hex[:10], new_key_text()

    async def main() -> None:
        old = storage(mongo_uri, database, key)
        await old.start()
        await old.login_user("wxapp", "o1", None, KEY_A, time.time())
        now = time.time()
        for name, expires in (("h-live", now + 3600), ("h-expired", now - 60)):
            await old.put_login_session(LoginSession(name, "wxapp", "o1", None, now - 120, expires))
        for name in ("ev-1:crm", "ev-2:crm"):
            event = OutboxEvent(name, "phone.bound", "wxapp", "crm", {"n": 1}, now, next_attempt_at=now)
            await old.enqueue_event(event)
        (delivered,) = await old.claim_events("w1", 1, 30, now + 1)
        await old.ack_event(delivered.id, "w1", now + 3600)
        waiting = ({"ev-1:crm", "ev-2:crm"} - {delivered.id}).pop()
        await old.close()
        client: MongoClient[dict[str, Any]] = MongoClient(mongo_uri, serverSelectionTimeoutMS=5000)
        db = client[database]
        # layout 2 had no due_at, and claimed by status and time
        db.outbox.update_many({}, {"$unset": {"due_at": ""}})
        db.outbox.create_index([("status", 1), ("next_attempt_at", 1)])
        for index in db.sessions.list_indexes():
            if dict(index["key"]) == {"expire_at": 1}:
                db.sessions.drop_index(index["name"])
        db.sessions.create_index([("expire_at", 1)], expireAfterSeconds=0)
        db.meta.update_one({"_id": "schema"}, {"$set": {"version": 2}})
        assert any("expireAfterSeconds" in index for index in db.sessions.list_indexes())

        new = storage(mongo_uri, database, key)
        with capture_logs() as logs:
            await new.start()
        try:
            migrated = [e for e in logs if e["event"] == "storage_schema_migrated"]
            assert [(e["previous"], e["version"]) for e in migrated] == [(2, SCHEMA_VERSION)]
            indexes = list(db.sessions.list_indexes())
            assert not [index for index in indexes if "expireAfterSeconds" in index]
            assert [index for index in indexes if dict(index["key"]) == {"expire_at": 1}]  # the sweep's
            found = await new.get_login("h-live")
            assert found is not None
            assert found[1] is not None
            assert found[1].session_key == KEY_A
            # the expired one reads as expired (check_session refuses it, as before); the sweep
            # removes it, and only it
            expired = await new.get_login("h-expired")
            assert expired is not None
            assert expired[0].expired()
            assert await new.sweep_expired_sessions(time.time()) == 1
            assert await new.get_login("h-expired") is None
            assert await new.get_login("h-live") is not None
            assert await new.sweep_expired_sessions(time.time()) == 0
            # the waiting event is claimable again; the delivered one stays delivered
            outbox_keys = [list(dict(index["key"])) for index in db.outbox.list_indexes()]
            assert ["status", "next_attempt_at"] not in outbox_keys
            assert ["due_at"] in outbox_keys
            claimed = await new.claim_events("w2", 10, 30, time.time())
            assert [e.id for e in claimed] == [waiting]
        finally:
            await new.close()
            client.close()

    asyncio.run(main())
