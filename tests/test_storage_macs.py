"""Whoever can write to the database cannot mint sessions or signed webhooks.

The mongo storage MACs the records that grant access or cause signed deliveries (login
sessions, session keys, outbox events) under a key derived from the storage key. Here an
attacker writes to the database directly with PyMongo, as a local process on the embedded
server's port or a holder of leaked MongoDB credentials would: what they write, or alter,
is absent (an outbox event: dead-lettered), logged as ``storage_record_rejected``, never
a 500. Real nx-27017 over a socket; at the end, real gateway processes.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import hmac
import json
import os
import stat
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient
from structlog.testing import capture_logs

from gateway.errors import ConfigError
from gateway.sealing import KeyRing, SealError, new_key_text, parse_key
from gateway.storage import AccessToken, LoginSession
from tests.helpers import post
from tests.test_multiprocess import Cluster
from tests.test_storage_contract import KEY_A, STORAGE_KEY, event
from tests.webhook_receiver import Receiver
from wxgate_plugins.storages.mongo import MongoOptions, MongoStorage


def mongo(uri: str, database: str, key: str = STORAGE_KEY, **extra: Any) -> MongoStorage:
    return MongoStorage(MongoOptions(uri=uri, database=database, encryption_key=key, **extra))


@contextmanager
def attacker(uri: str, database: str) -> Iterator[Any]:
    """Write access to the database and nothing else: no storage key."""
    client: MongoClient[dict[str, Any]] = MongoClient(uri, serverSelectionTimeoutMS=5000)
    try:
        yield client[database]
    finally:
        client.close()


def rejections(logs: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [entry for entry in logs if entry["event"] == "storage_record_rejected"]


def run(uri: str, body: Any) -> None:
    database = "mac" + uuid.uuid4().hex[:10]

    async def main() -> None:
        storage = mongo(uri, database)
        await storage.start()
        try:
            with attacker(uri, database) as db:
                await body(storage, db)
        finally:
            await storage.close()

    asyncio.run(main())


def forged_session(token_hash: str, openid: str = "victim") -> dict[str, Any]:
    now = time.time()
    return {
        "_id": token_hash,
        "appid": "wxapp",
        "openid": openid,
        "unionid": None,
        "created_at": now,
        "expires_at": now + 3600,
    }


def test_a_forged_session_is_absent_and_logged_without_its_content(mongo_uri: str) -> None:
    async def body(storage: MongoStorage, db: Any) -> None:
        digest = hashlib.sha256(b"attacker-chosen-token").hexdigest()
        db.sessions.insert_one(forged_session(digest))
        with capture_logs() as logs:
            assert await storage.get_login_session(digest) is None
            assert await storage.list_login_sessions("wxapp", "victim") == []
        rejected = rejections(logs)
        assert [(r["collection"], r["id"]) for r in rejected] == [("sessions", digest)] * 2
        assert "no MAC" in rejected[0]["reason"]
        assert set(rejected[0]) == {"event", "log_level", "collection", "id", "reason"}
        assert "victim" not in repr(rejected)

    run(mongo_uri, body)


def test_a_session_mac_is_bound_to_its_id_and_fields(mongo_uri: str) -> None:
    async def body(storage: MongoStorage, db: Any) -> None:
        now = time.time()
        await storage.put_login_session(LoginSession("h-real", "wxapp", "attacker", None, now, now + 60))
        genuine = db.sessions.find_one({"_id": "h-real"})
        assert genuine["mac"].startswith("m1.")
        assert await storage.get_login_session("h-real") is not None
        # the attacker's own valid session, copied under another token hash or onto another user
        db.sessions.insert_one({**genuine, "_id": "h-copy"})
        db.sessions.insert_one({**genuine, "_id": "h-victim-copy"})
        db.sessions.update_one({"_id": "h-victim-copy"}, {"$set": {"openid": "victim"}})
        db.sessions.update_one({"_id": "h-real"}, {"$set": {"expires_at": now + 10 * 365 * 86400}})
        with capture_logs() as logs:
            for digest in ("h-copy", "h-victim-copy", "h-real"):
                assert await storage.get_login_session(digest) is None
        assert [r["id"] for r in rejections(logs)] == ["h-copy", "h-victim-copy", "h-real"]
        assert all("does not match" in r["reason"] for r in rejections(logs))

    run(mongo_uri, body)


def test_a_session_from_before_macs_is_absent(mongo_uri: str) -> None:
    """Written by the previous version (no MAC): not blessed by the upgrade; the user logs in again."""

    async def body(storage: MongoStorage, db: Any) -> None:
        now = time.time()
        await storage.put_login_session(LoginSession("h-old", "wxapp", "o1", "u1", now, now + 60))
        db.sessions.update_one({"_id": "h-old"}, {"$unset": {"mac": ""}})
        with capture_logs() as logs:
            assert await storage.get_login_session("h-old") is None
            assert await storage.list_login_sessions("wxapp", "o1") == []
        assert {(r["collection"], r["id"]) for r in rejections(logs)} == {("sessions", "h-old")}
        # still revocable by user, so that nothing of it outlives `wxgate sessions revoke`
        assert await storage.delete_login_sessions("wxapp", "o1") == 1

    run(mongo_uri, body)


def test_a_forged_outbox_event_is_dead_lettered_not_delivered(mongo_uri: str) -> None:
    async def body(storage: MongoStorage, db: Any) -> None:
        now = time.time()
        forged = event("forged:crm", now)
        fields = dataclasses.asdict(forged)
        # what enqueue_event writes (due_at: when it may be claimed), but no MAC
        db.outbox.insert_one({"_id": fields.pop("id"), **fields, "due_at": forged.next_attempt_at})
        with capture_logs() as logs:
            assert await storage.claim_events("w1", 10, 30, now + 1) == []
        (rejected,) = rejections(logs)
        assert (rejected["collection"], rejected["id"]) == ("outbox", "forged:crm")
        assert rejected["action"] == "dead-lettered for an operator to review"
        stored = db.outbox.find_one({"_id": "forged:crm"})
        assert stored["status"] == "dead"
        assert stored["last_error"].startswith("not delivered: the record has no MAC")
        # an operator's `wxgate events retry --all` does not send it either
        with capture_logs() as logs:
            assert await storage.requeue_events(None, now + 2) == 0
            assert await storage.requeue_events(["forged:crm"], now + 2) == 0
        assert [r["action"] for r in rejections(logs)] == ["not requeued"] * 2
        assert db.outbox.find_one({"_id": "forged:crm"})["status"] == "dead"

    run(mongo_uri, body)


def test_an_altered_outbox_event_is_dead_lettered(mongo_uri: str) -> None:
    """The MAC covers where the delivery goes and what it says."""

    async def body(storage: MongoStorage, db: Any) -> None:
        now = time.time()
        for name in ("payload", "endpoint", "type", "appid", "genuine"):
            assert await storage.enqueue_event(event(f"{name}:crm", now))
        db.outbox.update_one({"_id": "payload:crm"}, {"$set": {"payload.openid": "victim"}})
        db.outbox.update_one({"_id": "endpoint:crm"}, {"$set": {"endpoint": "sms"}})
        db.outbox.update_one({"_id": "type:crm"}, {"$set": {"type": "phone.bound"}})
        db.outbox.update_one({"_id": "appid:crm"}, {"$set": {"appid": "wxother"}})
        genuine = db.outbox.find_one({"_id": "genuine:crm"})
        db.outbox.insert_one({**genuine, "_id": "copied:crm"})  # a genuine MAC under another id
        with capture_logs() as logs:
            claimed = await storage.claim_events("w1", 10, 30, now + 1)
        assert [e.id for e in claimed] == ["genuine:crm"]
        assert sorted(r["id"] for r in rejections(logs)) == [
            "appid:crm",
            "copied:crm",
            "endpoint:crm",
            "payload:crm",
            "type:crm",
        ]
        dead = {e.id for e in await storage.list_events("dead", 10)}
        assert dead == {"appid:crm", "copied:crm", "endpoint:crm", "payload:crm", "type:crm"}

    run(mongo_uri, body)


def test_events_from_before_macs_become_dead_letters(mongo_uri: str) -> None:
    """Pending and delivering events of the previous version: dead letters for an operator, not sent."""

    async def body(storage: MongoStorage, db: Any) -> None:
        now = time.time()
        await storage.enqueue_event(event("old-pending:crm", now))
        await storage.enqueue_event(event("old-delivering:crm", now))
        await storage.enqueue_event(event("new:crm", now))
        db.outbox.update_many({"_id": {"$regex": "^old-"}}, {"$unset": {"mac": ""}})
        db.outbox.update_one(
            {"_id": "old-delivering:crm"}, {"$set": {"status": "delivering", "lease_owner": "gone", "lease_until": 0.0}}
        )
        with capture_logs() as logs:
            claimed = await storage.claim_events("w1", 10, 30, now + 1)
        assert [e.id for e in claimed] == ["new:crm"]
        assert sorted(r["id"] for r in rejections(logs)) == ["old-delivering:crm", "old-pending:crm"]
        assert all("no MAC" in r["reason"] for r in rejections(logs))
        dead = await storage.list_events("dead", 10)
        assert {e.id for e in dead} == {"old-delivering:crm", "old-pending:crm"}
        assert all((e.last_error or "").startswith("not delivered: ") for e in dead)
        # a genuine dead letter still goes back with retry
        await storage.dead_letter_event("new:crm", "w1", "HTTP 400")
        assert await storage.requeue_events(None, now + 2) == 1

    run(mongo_uri, body)


def test_a_tampered_access_token_is_absent_not_a_500(mongo_uri: str) -> None:
    async def body(storage: MongoStorage, db: Any) -> None:
        await storage.put_access_token(AccessToken("wxapp", "ACCESS-TOKEN-VALUE", time.time() + 60))
        db.tokens.update_one({"_id": "wxapp"}, {"$set": {"token": "v1.00000000.AAAA"}})
        with capture_logs() as logs:
            assert await storage.get_access_token("wxapp") is None
        assert [(r["collection"], r["id"]) for r in rejections(logs)] == [("tokens", "wxapp")]
        await storage.put_access_token(AccessToken("wxapp", "FRESH-TOKEN", 2000.0))
        assert await storage.get_access_token("wxapp") == AccessToken("wxapp", "FRESH-TOKEN", 2000.0)

    run(mongo_uri, body)


def test_record_macs_use_their_own_key_and_follow_key_rotation() -> None:
    old, new = parse_key(new_key_text()), parse_key(new_key_text())
    fields = {"appid": "wxapp", "openid": "o1"}
    tag = KeyRing(old).mac("sessions", "h1", fields)
    KeyRing(new, [old]).verify(tag, "sessions", "h1", fields)  # an old key still verifies
    with pytest.raises(SealError, match="no key of the ring"):
        KeyRing(new).verify(tag, "sessions", "h1", fields)
    with pytest.raises(SealError, match="does not match"):
        KeyRing(old).verify(tag, "outbox", "h1", fields)  # another collection
    # not an HMAC under the storage key itself: the MAC key is derived, with a label
    message = json.dumps(["sessions", "h1", fields], sort_keys=True, separators=(",", ":")).encode()
    assert base64.b64decode(tag.split(".")[2]) != hmac.new(old, message, hashlib.sha256).digest()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_embedded_data_is_private_and_its_key_lives_beside_it(tmp_path: Path) -> None:
    previous_umask = os.umask(0o022)  # a usual umask: what is private must be made so
    try:
        data = tmp_path / "var" / "mongo"
        data.mkdir(parents=True, mode=0o755)  # left by an older wxgate
        (data / "notes.txt").write_text("x")
        os.chmod(data / "notes.txt", 0o644)
        storage = MongoStorage(MongoOptions(uri="embedded", data_dir=str(data)))

        async def main() -> None:
            await storage.start()
            try:
                await storage.upsert_user("wxapp", "o1", None, 1.0)
                assert mode(data / "server.json") == 0o600
            finally:
                await storage.close()

        asyncio.run(main())
    finally:
        os.umask(previous_umask)
    assert mode(data) == 0o700
    files = [p for p in data.iterdir() if p.is_file()]
    assert data / "wxgate.db" in files
    assert {p.name: mode(p) for p in files} == {p.name: 0o600 for p in files}
    keys = tmp_path / "var" / "keys"
    assert mode(keys) == 0o700
    assert mode(keys / "mongo.key") == 0o600
    assert not (data / "storage.key").exists()  # a copy of the data directory alone does not open it


def test_a_key_kept_in_the_data_directory_is_moved_beside_it(tmp_path: Path) -> None:
    data = tmp_path / "var" / "mongo"
    key = new_key_text()

    async def write_then_read() -> None:
        # as the previous version did: the data sealed with the key in data_dir/storage.key
        first = MongoStorage(MongoOptions(uri="embedded", data_dir=str(data), encryption_key=key))
        await first.start()
        await first.rotate_session_key("wxapp", "o1", None, KEY_A)
        await first.close()
        (data / "storage.key").write_text(key + "\n")
        upgraded = MongoStorage(MongoOptions(uri="embedded", data_dir=str(data)))  # encryption_key: auto
        with capture_logs() as logs:
            await upgraded.start()
        try:
            keys = await upgraded.get_session_keys("wxapp", "o1")
            assert keys is not None
            assert keys.session_key == KEY_A
        finally:
            await upgraded.close()
        assert [e["event"] for e in logs if e["event"] == "storage_key_moved"] == ["storage_key_moved"]

    asyncio.run(write_then_read())
    moved = tmp_path / "var" / "keys" / "mongo.key"
    assert moved.read_text().strip() == key
    assert mode(moved) == 0o600
    assert not (data / "storage.key").exists()


def test_two_different_keys_refuse_to_start(tmp_path: Path) -> None:
    data = tmp_path / "var" / "mongo"
    data.mkdir(parents=True)
    (data / "storage.key").write_text(new_key_text())
    (tmp_path / "var" / "keys").mkdir()
    (tmp_path / "var" / "keys" / "mongo.key").write_text(new_key_text())
    storage = MongoStorage(MongoOptions(uri="embedded", data_dir=str(data)))
    with pytest.raises(ConfigError, match="two different storage keys"):
        storage.before_fork()
    assert storage.embedded is not None
    storage.embedded.stop()
    assert (data / "storage.key").exists()  # nothing is lost: the operator chooses


# --- through real gateway processes ----------------------------------------------------


def get(url: str, token: str) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_a_gateway_refuses_forged_sessions_and_delivers_no_forged_event(tmp_path: Path, mongo_uri: str) -> None:
    database = "macgw" + uuid.uuid4().hex[:8]
    cluster = Cluster(tmp_path, mongo_uri)
    receiver = Receiver().start()
    cluster.config.write_text(
        f"""
server: {{log_format: json}}
storage:
  plugin: mongo
  options: {{uri: "{mongo_uri}", database: "{database}", encryption_key: "{STORAGE_KEY}"}}
webhooks:
  poll_interval: 0.1
  endpoints:
    - {{name: crm, url: "{receiver.url}", secret: "{receiver.secret}"}}
pipelines:
  login: [code2session, persist_user, issue_session, {{webhook: {{event: user.login}}}}]
apps:
  shop: {{appid: wx00000000000shop, secret: shop-secret-1234, upstream: "{cluster.sandbox_url}"}}
"""
    )
    try:
        gateway = cluster.gateway()
        code = cluster.device("wx.login", "real")["code"]
        status, login = post(gateway + "/v1/shop/login", {"code": code})
        assert status == 200, login
        deadline = time.monotonic() + 15
        while len(receiver.delivered()) < 1:
            assert time.monotonic() < deadline, "the genuine event was not delivered"
            time.sleep(0.05)

        with attacker(mongo_uri, database) as db:
            token = "forged-token-" + uuid.uuid4().hex
            session = forged_session(hashlib.sha256(token.encode()).hexdigest(), openid=login["openid"])
            db.sessions.insert_one({**session, "appid": "wx00000000000shop"})
            genuine = db.outbox.find_one({})
            forged_payload = {**genuine["payload"], "id": "forged", "openid": "victim"}
            db.outbox.insert_one(
                {
                    **genuine,
                    "_id": "forged:crm",
                    "payload": forged_payload,
                    "status": "pending",
                    "attempts": 0,
                    "due_at": time.time(),
                }
            )
        status, body = get(gateway + "/v1/shop/session", token)
        assert (status, body["error"]["code"]) == (401, "session_invalid")

        with attacker(mongo_uri, database) as db:
            # the real user's session key, tampered with: their token is refused with a 401, not a 500
            db.users.update_one({"openid": login["openid"]}, {"$set": {"keys": ["v1.00000000.AAAA"]}})
        status, body = get(gateway + "/v1/shop/session", login["token"])
        assert (status, body["error"]["code"]) == (401, "session_invalid")
        with attacker(mongo_uri, database) as db:
            deadline = time.monotonic() + 15
            while db.outbox.find_one({"_id": "forged:crm"})["status"] != "dead":
                assert time.monotonic() < deadline, "the forged event was not dead-lettered"
                time.sleep(0.05)
        assert len(receiver.received) == 1  # the genuine event only
        assert receiver.delivered()[0]["id"] != "forged"
    finally:
        receiver.stop()
        outputs = cluster.stop()
    lines = [json.loads(line) for out in outputs for line in out.splitlines() if line.startswith("{")]
    rejected = {(e["collection"], e["id"]) for e in lines if e.get("event") == "storage_record_rejected"}
    assert ("outbox", "forged:crm") in rejected
    assert {c for c, _ in rejected} == {"sessions", "users", "outbox"}
    assert not [e for e in lines if e.get("status") == 500]
