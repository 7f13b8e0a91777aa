"""The mongo storage's schema version, and the migration of an older database at start.

One document, ``meta`` ``{_id: "schema", version: N}``, says which layout a database
has. At start every process reads it; when it is older than :data:`SCHEMA_VERSION`, one
process migrates under a lease in ``leases`` while the others wait for the version to
change, and a process that finds a newer version than it knows refuses to start (an
older wxgate would misread the records). A database without the document has layout 1,
the one before the document existed (an empty database too: migrating it costs nothing).

Layout 1 to 2: session keys and phones move into the user's record in ``users`` (so that a
login is one write and the session read finds keys and phone with one command); the
``session_keys`` and ``phones`` collections are dropped. Sessions are unchanged: those
without a MAC stay absent, as before the upgrade.

Layout 2 to 3: ``sessions`` loses its TTL index (its ``expire_at`` index stays, plain), and
expired sessions are removed by :meth:`MongoStorage.sweep_expired_sessions`, which each
gateway process calls every ten minutes. A session past its ``expires_at`` was refused on
read before and still is: only who deletes the record changes. Why: the MongoDB wire-protocol server the embedded
default runs (nx-27017) applies a collection's TTL on every read of it, two deletes per
read, and the session read is on every authenticated request (measured: 0.5 ms of server
CPU per read, as much as the read itself). And outbox events waiting to be claimed get
``due_at`` (a pending event's next attempt, a delivering one's lease end; absent once
delivered or dead), indexed alone, which claims select on: the same server reads the whole
outbox for a claim on status and time, delivered events included (11 ms a claim with 5,000
of them, two claims per event).
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import os
import time
import uuid
from typing import TYPE_CHECKING, Any

from pymongo.errors import OperationFailure

from gateway.errors import ConfigError, StorageUnavailable
from gateway.logs import get_logger
from gateway.sealing import SealError

if TYPE_CHECKING:
    from wxgate_plugins.storages.mongo import MongoStorage

SCHEMA_VERSION = 3
LEASE = "wxgate.schema-migration"
LEASE_SECONDS = 60.0
INDEX_NOT_FOUND = 27  # MongoDB's code for dropping an index that is not there
# How long a process waits for another one's migration before it gives up (503 at start).
WAIT_SECONDS = 300.0
# Fields of a layout-1 session_keys record under its MAC (besides its id).
_V1_SESSION_KEYS_FIELDS = ("unionid", "key", "prev", "updated_at")
log = get_logger("wxgate.storage")


async def schema_version(db: Any) -> int:
    doc = await db.meta.find_one({"_id": "schema"})
    version = 1 if doc is None else doc.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ConfigError(
            f"database {db.name!r}: the schema-version document (meta, _id 'schema') has no whole version; "
            "restore it from a backup, or remove it to have the database taken as layout 1 and migrated"
        )
    return version


def _refuse_newer(db: Any, version: int) -> None:
    if version > SCHEMA_VERSION:
        raise ConfigError(
            f"database {db.name!r} has storage schema {version}, newer than this wxgate knows "
            f"({SCHEMA_VERSION}): run the wxgate version that wrote it, or a newer one"
        )


async def migrate(storage: MongoStorage, wait: float = WAIT_SECONDS) -> None:
    """Bring the database to :data:`SCHEMA_VERSION`, or wait for the process doing it. On a
    database already at it (the usual start), settle what a wxgate of the layout before may
    have written since its migration (:func:`settle_layout_3`)."""
    db = storage.db
    version = await schema_version(db)
    _refuse_newer(db, version)
    if version == SCHEMA_VERSION:
        dropped, waiting = await settle_layout_3(storage)
        if dropped or waiting:  # the migration did this: a wxgate of layout 2 wrote since
            log.warning("storage_layout_3_settled", indexes_dropped=dropped, waiting_events=waiting)
        return
    owner = f"migrate-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    deadline = time.monotonic() + wait
    while True:
        if await storage.acquire_lease(LEASE, owner, LEASE_SECONDS):
            try:
                version = await schema_version(db)  # another process may have finished meanwhile
                _refuse_newer(db, version)
                if version < SCHEMA_VERSION:
                    if version < 2:
                        await _layout_1_to_2(storage, owner)
                    await _layout_2_to_3(storage, owner)
                    await db.meta.update_one(
                        {"_id": "schema"},
                        {"$set": {"version": SCHEMA_VERSION, "migrated_at": time.time()}},
                        upsert=True,
                    )
                    log.info("storage_schema_migrated", database=db.name, version=SCHEMA_VERSION, previous=version)
            finally:
                await storage.release_lease(LEASE, owner)
            return
        await asyncio.sleep(0.25)
        version = await schema_version(db)
        _refuse_newer(db, version)
        if version == SCHEMA_VERSION:
            return
        if time.monotonic() > deadline:
            raise StorageUnavailable(
                log_detail=f"database {db.name!r}: another process has held the migration lease for {wait:.0f} s"
            )


async def _layout_1_to_2(storage: MongoStorage, owner: str) -> None:
    """Idempotent: every write sets values derived from the layout-1 records, which stay until
    the end, so a migration interrupted anywhere is done again from the start."""
    db = storage.db
    assert storage.ring is not None
    moved = 0
    async for doc in db.session_keys.find({}):
        record_id = str(doc.get("_id"))
        appid, _, openid = record_id.partition(":")
        try:
            storage.ring.verify(doc.get("mac"), "session_keys", record_id, _v1_fields(doc))
            key = storage.ring.open(doc["key"], record_id)
            prev = storage.ring.open(doc["prev"], record_id) if doc["prev"] is not None else None
        except (SealError, KeyError, TypeError) as exc:
            # absent before the upgrade, absent after it: the user logs in again
            log.warning("storage_record_rejected", collection="session_keys", id=record_id[:100], reason=str(exc))
            continue
        unionid, at = doc["unionid"], float(doc["updated_at"])
        sealed = [storage._sealed_key(record_id, k, unionid, at) for k in (prev, key) if k is not None]
        changes: dict[str, Any] = {"keys": sealed, "kid": storage._kid(record_id, key)}
        if unionid:
            changes["unionid"] = unionid
        await db.users.update_one({"appid": appid, "openid": openid}, {"$set": changes}, upsert=True)
        moved += 1
        if moved % 500 == 0:
            await storage.acquire_lease(LEASE, owner, LEASE_SECONDS)  # still migrating: keep the lease
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    async for doc in db.phones.find({}):
        try:
            user = (str(doc["appid"]), str(doc["openid"]))
            binding = {name: doc[name] for name in ("key", "masked", "country_code", "first_seen", "last_seen")}
        except KeyError:
            continue  # not written by a gateway
        binding["number"] = doc.get("number")
        slot = phone_slot(str(binding["key"]))
        await db.users.update_one(
            {"appid": user[0], "openid": user[1]}, {"$set": {f"phones.{slot}": binding}}, upsert=True
        )
        if user not in latest or binding["last_seen"] > latest[user]["last_seen"]:
            latest[user] = binding
    for (appid, openid), binding in latest.items():
        summary = {name: binding[name] for name in ("key", "masked", "country_code", "last_seen")}
        await db.users.update_one({"appid": appid, "openid": openid}, {"$set": {"phone": summary}})
    await db.session_keys.drop()
    await db.phones.drop()
    log.info("storage_layout_2", session_keys_moved=moved, users_with_phones=len(latest))


async def _layout_2_to_3(storage: MongoStorage, owner: str) -> None:
    dropped, waiting = await settle_layout_3(storage, owner)
    log.info("storage_layout_3", indexes_dropped=dropped, waiting_events=waiting)


async def settle_layout_3(storage: MongoStorage, owner: str | None = None) -> tuple[list[str], int]:
    """What layout 3 needs of a database, made so (idempotent): no TTL index on ``sessions``
    and no claim index on the outbox's status and time (dropped by the names the server
    reports: servers name indexes differently; the plain indexes replacing them are made at
    start), and a ``due_at`` on every pending or delivering event. The migration runs it once;
    every later start runs it again, because a wxgate of layout 2 still running (or started) while
    the database was migrated recreates those indexes (a TTL index on ``sessions`` would then
    stop the plain one from being made) and enqueues events without ``due_at``. With ``owner``,
    the migration lease is renewed as it goes. Returns the indexes dropped and the events given
    a ``due_at``."""
    db = storage.db
    dropped = []
    for collection in (db.sessions, db.outbox):
        async for index in await command_cursor(collection.list_indexes()):
            if _stale_index(collection.name, index):
                try:
                    await collection.drop_index(index["name"])
                except OperationFailure as exc:
                    if exc.code != INDEX_NOT_FOUND:
                        raise
                    continue  # another process dropped it meanwhile
                dropped.append(f"{collection.name}.{index['name']}")
    waiting = 0
    # one by one: the test server does not run update pipelines ($set from another field)
    untimed = {"status": {"$in": ["pending", "delivering"]}, "due_at": {"$exists": False}}
    async for doc in db.outbox.find(untimed, {"status": 1, "next_attempt_at": 1, "lease_until": 1}):
        due = due_at_of(doc)
        if due is not None:
            await db.outbox.update_one({"_id": doc["_id"], "status": doc["status"]}, {"$set": {"due_at": due}})
            waiting += 1
            if owner is not None and waiting % 500 == 0:
                await storage.acquire_lease(LEASE, owner, LEASE_SECONDS)  # still migrating: keep the lease
    return dropped, waiting


def due_at_of(doc: dict[str, Any]) -> float | None:
    """When an outbox record may be claimed, by its state: a pending event's next attempt, a
    delivering one's lease end; None once delivered or dead (or when it says nothing sane)."""
    field = {"pending": "next_attempt_at", "delivering": "lease_until"}.get(str(doc.get("status")))
    value = doc.get(field) if field is not None else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _stale_index(collection: str, index: dict[str, Any]) -> bool:
    if collection == "sessions":
        return "expireAfterSeconds" in index
    return list(dict(index["key"])) == ["status", "next_attempt_at"]


async def command_cursor(cursor: Any) -> Any:
    """The cursor of an ``aggregate`` or ``list_indexes``: pymongo's async API returns it from
    a coroutine, Motor at once."""
    return await cursor if inspect.isawaitable(cursor) else cursor


def phone_slot(key: str) -> str:
    """The field under ``phones`` of a user's record that holds the phone ``key`` (a digest:
    a key may hold characters a field name cannot)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:24]


def _v1_fields(doc: dict[str, Any]) -> dict[str, Any]:
    fields = {name: doc[name] for name in _V1_SESSION_KEYS_FIELDS}
    value = fields["updated_at"]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError("field 'updated_at' is not a time")
    fields["updated_at"] = round(value * 1000)  # as the layout-1 MAC covered it
    return fields
