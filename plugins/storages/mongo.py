"""MongoDB storage: durable, shared by every gateway process and host.

PyMongo's async API (``AsyncMongoClient``) by default; ``driver: motor`` for users who
must keep Motor. ``uri: embedded`` runs the nx-27017 wire-protocol server as a child
process with its data under ``data_dir``. Session keys and access tokens are sealed
with AES-GCM (:mod:`gateway.sealing`); login tokens are stored only as hashes.
Every write is an idempotent upsert or a compare-and-set, so a retried request never
duplicates a user or an event, and a failed one leaves no half-written record.

Records that grant access or cause signed deliveries (login sessions, outbox events) also
carry a MAC under the storage key; a session key is sealed together with the unionid
WeChat gave with it, the seal doing the MAC's work: a record that anyone who can write to
the database put there, or altered, fails it. Such a record, like one whose seal does not
open, is treated as absent (an outbox event: dead-lettered) and logged as
``storage_record_rejected`` with its collection and id, never a 500.

Layout (docs/storage.md; :mod:`.mongo_schema` migrates older databases at start): a
user's record in ``users`` holds the session keys and phones too, so that a login is one
write and a request's authentication one read (the session, with the user's record joined
by ``$lookup``). Expired sessions are removed by :meth:`MongoStorage.sweep_expired_sessions`,
which the gateway calls every few minutes (see :mod:`.mongo_schema`, layout 3, for why not
by a TTL index).
"""

from __future__ import annotations

import atexit
import dataclasses
import datetime as dt
import functools
import inspect
import json
import os
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any, ClassVar, Concatenate, Literal, ParamSpec, TypeVar

from bson import ObjectId
from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pymongo import ASCENDING, ReturnDocument
from pymongo.errors import DuplicateKeyError, PyMongoError

from gateway import StorageOptions
from gateway.errors import ConfigError, GatewayError, StorageUnavailable
from gateway.logs import get_logger
from gateway.sealing import KeyRing, SealError, new_key_text, parse_key
from gateway.storage import (
    EVENT_STATUSES,
    AccessToken,
    EventStatus,
    LoginSession,
    OutboxEvent,
    PhoneBinding,
    SandboxUserRecord,
    SessionKeys,
    Storage,
    UserRecord,
)
from wxgate_plugins.storages.embedded_mongo import EmbeddedMongo, private_dir, running_embedded_uri
from wxgate_plugins.storages.mongo_schema import command_cursor, due_at_of, migrate, phone_slot

P = ParamSpec("P")
R = TypeVar("R")
CAS_ATTEMPTS = 5
# Users whose record id this process remembers (see MongoStorage._record_ids).
RECORD_IDS_REMEMBERED = 20_000
log = get_logger("wxgate.storage")
# What an operator reads in `wxgate events list` about an event the storage refused to deliver.
REJECTED_EVENT = "not delivered: {reason}; review it in the database (retry does not send it)"


class MongoOptions(StorageOptions):
    uri: str = Field("embedded", description="mongodb://... or 'embedded' (a local nx-27017 server).")
    database: str = Field("wxgate", pattern=r"^[A-Za-z0-9_-]{1,63}$")
    driver: Literal["pymongo", "motor"] = "pymongo"
    timeout_ms: int = Field(2000, ge=100, le=60_000, description="Server selection, connect and socket timeout.")
    max_pool_size: int = Field(100, ge=1, le=10_000)
    data_dir: str = Field("var/mongo", description="Where uri: embedded keeps its database.")
    encryption_key: SecretStr = Field(
        SecretStr("auto"),
        description="Base64 of 32 bytes; 'auto' (embedded only) keeps one in keys/ beside data_dir.",
        validate_default=True,  # the default 'auto' must be checked against uri too
    )
    old_encryption_keys: list[SecretStr] = Field(
        default_factory=list, description="Former keys: records sealed with them still open."
    )

    @field_validator("uri")
    @classmethod
    def _uri_shape(cls, value: str) -> str:
        if value == "embedded" or value.startswith(("mongodb://", "mongodb+srv://")):
            return value
        raise ValueError("expected 'embedded' or a mongodb:// or mongodb+srv:// URI")

    @field_validator("encryption_key")
    @classmethod
    def _key_shape(cls, value: SecretStr, info: ValidationInfo) -> SecretStr:
        text = value.get_secret_value()
        if text == "auto":
            if info.data.get("uri", "embedded") != "embedded":
                raise ValueError(
                    "'auto' only works with uri: embedded; give every gateway the same key, "
                    "e.g. encryption_key: ${WXGATE_STORAGE_KEY} (openssl rand -base64 32)"
                )
            return value
        try:
            parse_key(text)
        except SealError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("old_encryption_keys")
    @classmethod
    def _old_keys_shape(cls, values: list[SecretStr]) -> list[SecretStr]:
        for value in values:
            try:
                parse_key(value.get_secret_value())
            except SealError as exc:
                raise ValueError(str(exc)) from None
        return values


def _guarded(
    method: Callable[Concatenate[MongoStorage, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[MongoStorage, P], Coroutine[Any, Any, R]]:
    """Driver trouble becomes a 503 ``storage_unavailable``. A bad sealed value or MAC is
    handled where the record is read (treated as absent); one that still got here is a 500."""

    async def wrapper(self: MongoStorage, /, *args: P.args, **kwargs: P.kwargs) -> R:
        if self.db is None:
            raise StorageUnavailable(log_detail="mongo storage used before start()")
        try:
            return await method(self, *args, **kwargs)
        except PyMongoError as exc:
            raise StorageUnavailable(log_detail=f"mongo {method.__name__}: {type(exc).__name__}") from None
        except SealError as exc:
            raise GatewayError(log_detail=f"mongo {method.__name__}: {exc}; check encryption keys") from None

    functools.update_wrapper(wrapper, method)
    return wrapper


class MongoStorage(Storage):
    name: ClassVar[str] = "mongo"
    version: ClassVar[str] = "1.0.0"
    Options: ClassVar[type[StorageOptions]] = MongoOptions

    def __init__(self, options: StorageOptions) -> None:
        super().__init__(options)
        assert isinstance(options, MongoOptions)
        self.opts = options
        self.uri: str | None = None if options.uri == "embedded" else options.uri
        self.embedded: EmbeddedMongo | None = None
        self._embedded_owner_pid = 0
        self.ring: KeyRing | None = None
        self.client: Any = None
        self.db: Any = None
        # The collections, made once: PyMongo builds a new collection object at every
        # attribute access of the database (about 2 % of the gateway's CPU on /phone, py-spy).
        self._users: Any = None
        self._sessions: Any = None
        self._outbox: Any = None
        self._counters: Any = None
        # PyMongo command listeners for the client start() makes (tests count round trips with them).
        self.event_listeners: list[Any] = []
        # (appid, openid) -> the _id of the user's record, as last read or written here. A
        # record's id never changes, so this can only be missing or name a record since
        # deleted (then the write by id matches nothing and falls back to appid and openid).
        # Why: the phone's write follows the session read that found the record; selecting it
        # by _id rather than by the (appid, openid) index costs the embedded server about a
        # third less. Nothing a request is authorised by is kept here.
        self._record_ids: OrderedDict[tuple[str, str], Any] = OrderedDict()

    # --- lifecycle -----------------------------------------------------------------------

    def before_fork(self) -> None:
        if self.opts.uri == "embedded" and self.uri is None:
            data = Path(self.opts.data_dir)
            # A gateway already serving this data_dir: share its server (e.g. `wxgate events`
            # while the gateway runs) rather than open the same SQLite file twice.
            self.uri = running_embedded_uri(data)
            if self.uri is None:
                self.embedded = EmbeddedMongo(db=str(data / "wxgate.db"), marker=data / "server.json")
                self.uri = self.embedded.start()
                self._embedded_owner_pid = os.getpid()
                atexit.register(self.embedded.stop)
        self.ring = self._key_ring()

    def _key_ring(self) -> KeyRing:
        text = self.opts.encryption_key.get_secret_value()
        if text == "auto":
            key_file = auto_key_file(self.opts.data_dir)
            text = _auto_key(Path(self.opts.data_dir), key_file)
            try:
                parse_key(text)
            except SealError as exc:
                raise ConfigError(f"{key_file}: {exc}") from None
        older = [parse_key(k.get_secret_value()) for k in self.opts.old_encryption_keys]
        return KeyRing(parse_key(text), older)

    async def start(self) -> None:
        if self.uri is None or self.ring is None:
            self.before_fork()
        timeout = self.opts.timeout_ms
        settings: dict[str, Any] = {
            "serverSelectionTimeoutMS": timeout,
            "connectTimeoutMS": timeout,
            "socketTimeoutMS": timeout,
            "maxPoolSize": self.opts.max_pool_size,
            "appname": "wxgate",
        }
        if self.event_listeners:
            settings["event_listeners"] = list(self.event_listeners)
        if self.opts.driver == "motor":
            from motor.motor_asyncio import AsyncIOMotorClient

            self.client = AsyncIOMotorClient(self.uri, **settings)
        else:
            from pymongo import AsyncMongoClient

            self.client = AsyncMongoClient(self.uri, **settings)
        self.db = self.client[self.opts.database]
        self._users, self._sessions = self.db.users, self.db.sessions
        self._outbox, self._counters = self.db.outbox, self.db.counters
        try:
            await migrate(self)
            await self._create_indexes()
        except PyMongoError as exc:
            raise StorageUnavailable(log_detail=f"mongo start: {type(exc).__name__}: {exc}") from None

    @_guarded
    async def sweep_expired_sessions(self, now: float) -> int:
        """One indexed ``deleteMany`` (layout 3: no TTL index on sessions)."""
        result = await self._sessions.delete_many({"expire_at": {"$lt": _utc(now)}})
        return int(result.deleted_count)

    async def _create_indexes(self) -> None:
        db = self.db
        await db.users.create_index([("appid", ASCENDING), ("openid", ASCENDING)], unique=True)
        await db.users.create_index([("openid", ASCENDING)])  # the session read's $lookup
        await db.users.create_index([("unionid", ASCENDING)])
        await db.sessions.create_index([("expire_at", ASCENDING)])  # the sweep's; not a TTL index (layout 3)
        await db.sessions.create_index([("appid", ASCENDING), ("openid", ASCENDING)])  # revoking by user
        await db.counters.create_index([("expire_at", ASCENDING)], expireAfterSeconds=0)
        await db.outbox.create_index([("due_at", ASCENDING)])  # claiming (layout 3)
        await db.outbox.create_index([("status", ASCENDING), ("created_at", ASCENDING)])
        # delivered events: removed at their purge_at, set at the ack from webhooks.retention
        await db.outbox.create_index([("purge_at", ASCENDING)], expireAfterSeconds=0)
        await db.sandbox_users.create_index([("created_at", ASCENDING)])  # dropping the oldest first

    async def close(self) -> None:
        if self.client is not None:
            result = self.client.close()
            if inspect.isawaitable(result):
                await result
            self.client = self.db = None
        if self.embedded is not None and self._embedded_owner_pid == os.getpid():
            self.embedded.stop()

    @_guarded
    async def ping(self) -> None:
        await self.db.command("ping")

    def _seal(self, plain: str, record_id: str) -> str:
        assert self.ring is not None
        return self.ring.seal(plain, record_id)

    def _open(self, sealed: object, record_id: str) -> str:
        assert self.ring is not None
        return self.ring.open(sealed, record_id)

    def _mac(self, collection: str, record_id: str, fields: dict[str, Any]) -> str:
        assert self.ring is not None
        return self.ring.mac(collection, record_id, fields)

    def _verify(self, doc: dict[str, Any], collection: str, fields: dict[str, Any]) -> None:
        assert self.ring is not None
        self.ring.verify(doc.get("mac"), collection, doc["_id"], fields)

    @staticmethod
    def _rejected(collection: str, record_id: object, reason: str, **extra: str) -> None:
        # the id only (cut short: a forged one may be huge), never the record's content
        log.warning("storage_record_rejected", collection=collection, id=str(record_id)[:100], reason=reason, **extra)

    # --- session keys and login sessions -------------------------------------------------

    # The user's record in ``users`` holds the user's session keys (newest last, at most two),
    # so that a login records the key and counts the login in one command, and the session
    # read finds the keys with one $lookup. Each key is sealed together with the unionid
    # WeChat gave with it, bound to "appid:openid": the seal is its MAC, so a key copied onto
    # another user, or a unionid changed, does not open. ``kid`` (a keyed hash of the newest
    # key) lets the server refuse to push a key that is already the newest, atomically.

    def _kid(self, record_id: str, session_key: str) -> str:
        return self._mac("users.kid", record_id, {"k": session_key})

    def _sealed_key(self, record_id: str, session_key: str, unionid: str | None, now: float) -> str:
        plain = json.dumps({"k": session_key, "u": unionid, "t": _stored_time(now)}, separators=(",", ":"))
        return self._seal(plain, record_id)

    def _keys_of(self, doc: dict[str, Any], appid: str, openid: str) -> SessionKeys | None:
        """The session keys a user record holds: None when it holds none, or when the newest
        fails its seal; a previous key that fails its seal is left out (and reported)."""
        sealed = doc.get("keys")
        if sealed is None:
            return None
        record_id = f"{appid}:{openid}"
        try:
            if not isinstance(sealed, list) or not sealed:
                raise TypeError("field 'keys' is not a list of sealed keys")
            newest = self._opened_key(sealed[-1], record_id)
        except (SealError, KeyError, TypeError) as exc:
            self._rejected("users", record_id, _reason(exc))
            return None
        older = None
        if len(sealed) > 1:
            try:
                older = self._opened_key(sealed[-2], record_id)
            except (SealError, KeyError, TypeError) as exc:
                self._rejected("users", record_id, "previous key: " + _reason(exc))
        previous = older["k"] if older is not None and older["k"] != newest["k"] else None
        # the unionid WeChat gave with the newest key, else with the one before it
        unionid = newest["u"] or (older["u"] if older is not None else None)
        return SessionKeys(appid, openid, unionid, newest["k"], previous, newest["t"])

    def _opened_key(self, sealed: object, record_id: str) -> dict[str, Any]:
        try:
            item = json.loads(self._open(sealed, record_id))
        except ValueError:
            raise TypeError("a sealed key is not JSON") from None
        if not isinstance(item, dict) or not isinstance(item.get("k"), str):
            raise TypeError("a sealed key has no key")
        unionid, at = item.get("u"), item.get("t")
        if (unionid is not None and not isinstance(unionid, str)) or not isinstance(at, int | float):
            raise TypeError("a sealed key has a malformed unionid or time")
        return {"k": item["k"], "u": unionid, "t": float(at)}

    async def _push_key(
        self, appid: str, openid: str, unionid: str | None, session_key: str, now: float, count_login: bool
    ) -> dict[str, Any]:
        """Make ``session_key`` the newest of the user's keys, the former newest becoming the
        previous one; with ``count_login``, also what ``upsert_user`` records. One command
        unless the key is already the newest (then two). Concurrent rotations of one user
        are serialized by the server: each push sees the one before it, so the pair stays
        consistent (two different keys, the newest last)."""
        record_id = f"{appid}:{openid}"
        kid = self._kid(record_id, session_key)
        login: dict[str, Any] = {}
        if count_login:
            login = {"$min": {"first_seen": now}, "$inc": {"logins": 1}}
        changes: dict[str, Any] = {"last_seen": now} if count_login else {}
        if unionid:
            changes["unionid"] = unionid  # for queries; the sealed key carries the trusted copy
        selector = {"appid": appid, "openid": openid}
        for _ in range(CAS_ATTEMPTS):
            sealed = self._sealed_key(record_id, session_key, unionid, now)
            try:
                doc = await self._users.find_one_and_update(
                    {**selector, "kid": {"$ne": kid}},
                    {"$push": {"keys": {"$each": [sealed], "$slice": -2}}, "$set": {**changes, "kid": kid}, **login},
                    upsert=True,
                    return_document=ReturnDocument.AFTER,
                )
            except DuplicateKeyError:
                doc = None  # the record exists and this key is its newest (or a first insert raced)
            if doc is not None:
                return await self._reseal_previous(dict(doc), record_id, kid)
            # Already the newest key (the test server answers None where MongoDB raises): only
            # the login's bookkeeping changes, and only while it still is the newest.
            update: dict[str, Any] = {"$set": changes, **login} if changes else {**login}
            if not update:
                update = {"$set": {"kid": kid}}
            doc = await self._users.find_one_and_update(
                {**selector, "kid": kid}, update, return_document=ReturnDocument.AFTER
            )
            if doc is not None:
                return dict(doc)
            # A record that never held a key (made by upsert_user or bind_phone alone): the test
            # server's findAndModify does not match a missing field with $ne, as MongoDB does.
            doc = await self._users.find_one_and_update(
                {**selector, "kid": {"$exists": False}},
                {"$push": {"keys": {"$each": [sealed], "$slice": -2}}, "$set": {**changes, "kid": kid}, **login},
                return_document=ReturnDocument.AFTER,
            )
            if doc is not None:
                return await self._reseal_previous(dict(doc), record_id, kid)
        raise StorageUnavailable(log_detail=f"session key of {openid} changed {CAS_ATTEMPTS} times under us")

    async def _reseal_previous(self, doc: dict[str, Any], record_id: str, kid: str) -> dict[str, Any]:
        """After the storage key changed, the previous key is still sealed with the former
        one: seal it again with the active key (one more write, only then), so that the
        former key can be retired from ``old_encryption_keys``. A previous key that does not
        open (tampered with, or from a record not written by a gateway) is dropped."""
        assert self.ring is not None
        keys = doc.get("keys")
        if not isinstance(keys, list) or len(keys) != 2:
            return doc
        try:
            previous = self._open(keys[0], record_id)
        except SealError:
            resealed = keys[1:]  # a previous key that does not open is not kept (nor reported again)
        else:
            if isinstance(keys[0], str) and keys[0].startswith(f"v1.{self.ring.active_id}."):
                return doc  # the usual case: nothing to write
            resealed = [self._seal(previous, record_id), keys[1]]
        # only while nothing has changed it meanwhile
        await self._users.update_one({"_id": doc["_id"], "kid": kid}, {"$set": {"keys": resealed}})
        return {**doc, "keys": resealed}

    def _remember_record_id(self, appid: str, openid: str, record_id: object) -> None:
        if isinstance(record_id, str) and ObjectId.is_valid(record_id):
            record_id = ObjectId(record_id)  # the test server's $lookup gives a joined ObjectId as its hex
        if not isinstance(record_id, ObjectId):
            return
        user = (appid, openid)
        self._record_ids[user] = record_id
        self._record_ids.move_to_end(user)
        if len(self._record_ids) > RECORD_IDS_REMEMBERED:
            self._record_ids.popitem(last=False)

    def _pushed(self, doc: dict[str, Any], appid: str, openid: str) -> SessionKeys:
        keys = self._keys_of(doc, appid, openid)
        if keys is None:  # just written with this process's key: the ring or the server is broken
            raise StorageUnavailable(log_detail=f"the session keys of {openid} did not open right after writing")
        return keys

    @_guarded
    async def rotate_session_key(self, appid: str, openid: str, unionid: str | None, session_key: str) -> SessionKeys:
        doc = await self._push_key(appid, openid, unionid, session_key, time.time(), count_login=False)
        return self._pushed(doc, appid, openid)

    @_guarded
    async def login_user(
        self, appid: str, openid: str, unionid: str | None, session_key: str, now: float
    ) -> tuple[SessionKeys, UserRecord]:
        doc = await self._push_key(appid, openid, unionid, session_key, now, count_login=True)
        self._remember_record_id(appid, openid, doc.get("_id"))
        keys = self._pushed(doc, appid, openid)
        user = _user(doc)
        assert user is not None  # counted just now
        return keys, user

    @_guarded
    async def get_session_keys(self, appid: str, openid: str) -> SessionKeys | None:
        doc = await self._users.find_one({"appid": appid, "openid": openid}, {"phones": 0})
        return None if doc is None else self._keys_of(doc, appid, openid)

    @_guarded
    async def get_login(self, token_hash: str) -> tuple[LoginSession, SessionKeys | None] | None:
        # One command: the session, and by $lookup the records of users with its openid (one,
        # unless another app has the same openid), whose keys and latest phone it needs.
        pipeline = [
            {"$match": {"_id": token_hash}},
            {"$lookup": {"from": "users", "localField": "openid", "foreignField": "openid", "as": "users"}},
        ]
        cursor = await command_cursor(self._sessions.aggregate(pipeline))
        docs = await cursor.to_list(length=1)
        if not docs:
            return None
        doc = docs[0]
        joined = doc.pop("users", [])
        if isinstance(joined, str):  # the test wire-protocol server has given the array as JSON text
            joined = json.loads(joined)
        session = self._login_session(doc)
        if session is None:
            return None
        user = next((u for u in joined if isinstance(u, dict) and u.get("appid") == session.appid), None)
        if user is None:
            return session, None
        self._remember_record_id(session.appid, session.openid, user.get("_id"))
        keys = self._keys_of(user, session.appid, session.openid)
        return dataclasses.replace(session, bound_phone=_latest_phone(user)), keys

    @_guarded
    async def put_login_session(self, session: LoginSession) -> None:
        record = {
            "appid": session.appid,
            "openid": session.openid,
            "unionid": session.unionid,
            "created_at": _stored_time(session.created_at),
            "expires_at": _stored_time(session.expires_at),
        }
        # update_one($set, upsert) rather than replace_one: same effect, and the test
        # wire-protocol server does not upsert on replace.
        await self._sessions.update_one(
            {"_id": session.token_hash},
            {
                "$set": {
                    **record,
                    "mac": self._mac("sessions", session.token_hash, _mac_fields(record, _SESSION_FIELDS)),
                    # the sweep removes the record once this time has passed (layout 3)
                    "expire_at": dt.datetime.fromtimestamp(session.expires_at, dt.UTC).replace(tzinfo=None),
                }
            },
            upsert=True,
        )

    def _login_session(self, doc: dict[str, Any]) -> LoginSession | None:
        try:
            self._verify(doc, "sessions", _mac_fields(doc, _SESSION_FIELDS))
        except (SealError, KeyError, TypeError) as exc:
            self._rejected("sessions", doc["_id"], _reason(exc))
            return None
        return LoginSession(token_hash=doc["_id"], **{name: doc[name] for name in _SESSION_FIELDS})

    @_guarded
    async def get_login_session(self, token_hash: str) -> LoginSession | None:
        doc = await self._sessions.find_one({"_id": token_hash})
        return None if doc is None else self._login_session(doc)

    @_guarded
    async def delete_login_session(self, token_hash: str) -> bool:
        result = await self._sessions.delete_one({"_id": token_hash})
        return bool(result.deleted_count)

    @_guarded
    async def list_login_sessions(self, appid: str, openid: str) -> list[LoginSession]:
        query = {"appid": appid, "openid": openid, "expires_at": {"$gt": time.time()}}
        docs = await self._sessions.find(query).sort("created_at", ASCENDING).to_list(length=None)
        return [s for s in map(self._login_session, docs) if s is not None]

    @_guarded
    async def delete_login_sessions(self, appid: str, openid: str) -> int:
        # every record of the user, rejected ones included: none of them should outlive this
        result = await self._sessions.delete_many({"appid": appid, "openid": openid})
        return int(result.deleted_count)

    # --- users and phones ---------------------------------------------------------------

    @_guarded
    async def upsert_user(self, appid: str, openid: str, unionid: str | None, now: float) -> UserRecord:
        changes: dict[str, Any] = {"last_seen": now}
        if unionid:
            changes["unionid"] = unionid
        # One round trip: the update returns the record. first_seen by $min rather than
        # $setOnInsert, which find_one_and_update ignores on the test server; the same on
        # insert, and never later than a time already recorded.
        update = {"$min": {"first_seen": now}, "$set": changes, "$inc": {"logins": 1}}
        selector = {"appid": appid, "openid": openid}
        try:
            doc = await self._users.find_one_and_update(
                selector, update, upsert=True, return_document=ReturnDocument.AFTER, projection={"phones": 0}
            )
        except DuplicateKeyError:
            doc = None
        if doc is None:
            # two first logins raced to insert: the loser's update now finds the winner's record
            doc = await self._users.find_one_and_update(
                selector, update, return_document=ReturnDocument.AFTER, projection={"phones": 0}
            )
        user = _user(doc)
        assert user is not None  # counted just now
        return user

    @_guarded
    async def get_user(self, appid: str, openid: str) -> UserRecord | None:
        doc = await self._users.find_one({"appid": appid, "openid": openid}, {"phones": 0, "keys": 0})
        return _user(doc) if doc is not None else None

    @_guarded
    async def bind_phone(self, appid: str, openid: str, phone: PhoneBinding, now: float) -> None:
        # In the user's record, so that the session read finds the latest phone (GET /session:
        # one command) and binding costs one write; keyed by a digest of phone.key, which may
        # hold characters a field name cannot.
        slot = f"phones.{phone_slot(phone.key)}"
        summary = {"key": phone.key, "masked": phone.masked, "country_code": phone.country_code, "last_seen": now}
        update: dict[str, dict[str, Any]] = {
            "$min": {f"{slot}.first_seen": now},
            "$set": {
                f"{slot}.key": phone.key,
                f"{slot}.masked": phone.masked,
                f"{slot}.country_code": phone.country_code,
                f"{slot}.number": phone.number,
                f"{slot}.last_seen": now,
                "phone": summary,
            },
        }
        record_id = self._record_ids.get((appid, openid))
        if record_id is not None:
            if (await self._users.update_one({"_id": record_id}, update)).matched_count:
                return
            self._record_ids.pop((appid, openid), None)  # that record is gone
        selector = {"appid": appid, "openid": openid}
        for _ in range(CAS_ATTEMPTS):
            # Not an upsert: the test server stores a dotted $min of an upsert's insert as a
            # field named with the dots. The record exists whenever a session does (it holds
            # the keys), so the insert below happens only outside the flows.
            if (await self._users.update_one(selector, update)).matched_count:
                return
            binding = {
                "key": phone.key,
                "masked": phone.masked,
                "country_code": phone.country_code,
                "number": phone.number,
                "first_seen": now,
                "last_seen": now,
            }
            try:
                await self._users.insert_one(
                    {**selector, "phones": {slot.removeprefix("phones."): binding}, "phone": summary}
                )
                return
            except DuplicateKeyError:
                continue  # created meanwhile: update it
        raise StorageUnavailable(log_detail=f"the record of {openid} kept appearing and vanishing")

    @_guarded
    async def get_phones(self, appid: str, openid: str) -> list[PhoneBinding]:
        doc = await self._users.find_one({"appid": appid, "openid": openid}, {"phones": 1})
        return _phones(doc)

    @_guarded
    async def find_phone_owners(self, appid: str, key: str) -> list[str]:
        """The openids of the app's users with a binding of this phone key: an operator's
        look-up, never on a request's path, so it may read the app's users (see docs/storage.md)."""
        selector = {"appid": appid, f"phones.{phone_slot(key)}.key": key}
        docs = await self._users.find(selector, {"openid": 1}).to_list(length=None)
        return sorted({str(doc["openid"]) for doc in docs})

    # --- access tokens -----------------------------------------------------------------

    @_guarded
    async def get_access_token(self, appid: str) -> AccessToken | None:
        doc = await self.db.tokens.find_one({"_id": appid})
        if doc is None:
            return None
        try:
            token = self._open(doc.get("token"), appid)
        except SealError as exc:
            # absent, so the WeChat client fetches a fresh token and overwrites this one
            self._rejected("tokens", appid, str(exc))
            return None
        expires_at = doc.get("expires_at")
        if not isinstance(expires_at, int | float):
            self._rejected("tokens", appid, "malformed record: no expiry")
            return None
        return AccessToken(appid, token, float(expires_at))

    @_guarded
    async def put_access_token(self, token: AccessToken) -> None:
        await self.db.tokens.update_one(
            {"_id": token.appid},
            {"$set": {"token": self._seal(token.token, token.appid), "expires_at": token.expires_at}},
            upsert=True,
        )

    @_guarded
    async def acquire_lease(self, name: str, owner: str, seconds: float) -> bool:
        now = time.time()
        try:
            doc = await self.db.leases.find_one_and_update(
                {"_id": name, "$or": [{"until": {"$lte": now}}, {"owner": owner}]},
                {"$set": {"owner": owner, "until": now + seconds}},
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:
            return False  # held by someone else: the upsert collided with their record
        return doc is not None and doc.get("owner") == owner

    @_guarded
    async def release_lease(self, name: str, owner: str) -> None:
        await self.db.leases.delete_one({"_id": name, "owner": owner})

    # --- the sandbox's simulated WeChat ------------------------------------------------------
    # Session keys and tokens sealed like the gateway's own, bound to "sandbox:" + the record's
    # id so that a sealed value copied from another collection does not open here; a user's
    # other fields under a MAC. Only the sandbox, which has no authentication, uses these.

    @_guarded
    async def put_sandbox_user(self, user: SandboxUserRecord, max_users: int) -> None:
        record_id = f"{user.appid}:{user.openid}"
        record: dict[str, Any] = {
            "appid": user.appid,
            "openid": user.openid,
            "name": user.name,
            "unionid": user.unionid,
            "phone": user.phone,
            "key": self._seal(user.session_key, "sandbox:" + record_id),
            "logins": user.logins,
            "created_at": _stored_time(user.created_at),
        }
        record["mac"] = self._mac("sandbox_users", record_id, _mac_fields(record, _SANDBOX_USER_FIELDS))
        result = await self.db.sandbox_users.update_one({"_id": record_id}, {"$set": record})
        if result.matched_count:
            return
        try:
            await self.db.sandbox_users.insert_one({"_id": record_id, **record})
        except DuplicateKeyError:
            # another process inserted it meanwhile: this write is the newer one
            await self.db.sandbox_users.update_one({"_id": record_id}, {"$set": record})
            return
        excess = await self.db.sandbox_users.count_documents({}) - max_users
        if excess > 0:
            oldest = self.db.sandbox_users.find({}, {"_id": 1}).sort("created_at", ASCENDING).limit(excess)
            doomed = [doc["_id"] for doc in await oldest.to_list(length=excess)]
            await self.db.sandbox_users.delete_many({"_id": {"$in": doomed}})

    @_guarded
    async def get_sandbox_user(self, appid: str, openid: str) -> SandboxUserRecord | None:
        record_id = f"{appid}:{openid}"
        doc = await self.db.sandbox_users.find_one({"_id": record_id})
        if doc is None:
            return None
        try:
            self._verify(doc, "sandbox_users", _mac_fields(doc, _SANDBOX_USER_FIELDS))
            return SandboxUserRecord(
                appid=appid,
                openid=openid,
                name=doc["name"],
                unionid=doc["unionid"],
                phone=doc["phone"],
                session_key=self._open(doc["key"], "sandbox:" + record_id),
                logins=doc["logins"],
                created_at=doc["created_at"],
            )
        except (SealError, KeyError, TypeError) as exc:
            self._rejected("sandbox_users", record_id, _reason(exc))
            return None

    @_guarded
    async def put_sandbox_tokens(self, appid: str, tokens: Mapping[str, float]) -> None:
        sealed = self._seal(json.dumps(dict(tokens)), "sandbox:" + appid)
        await self.db.sandbox_tokens.update_one({"_id": appid}, {"$set": {"tokens": sealed}}, upsert=True)

    @_guarded
    async def get_sandbox_tokens(self, appid: str) -> dict[str, float]:
        doc = await self.db.sandbox_tokens.find_one({"_id": appid})
        if doc is None:
            return {}
        try:
            tokens = json.loads(self._open(doc.get("tokens"), "sandbox:" + appid))
            return {str(token): float(expires) for token, expires in tokens.items()}
        except (SealError, ValueError, TypeError, AttributeError) as exc:
            self._rejected("sandbox_tokens", appid, _reason(exc))
            return {}

    # --- rate-limit counters -------------------------------------------------------------

    @_guarded
    async def incr_counter(self, key: str, expires_at: float) -> int:
        # one atomic round trip; expire_at is the same for every increment of a key
        doc = await self._counters.find_one_and_update(
            {"_id": key},
            {
                "$inc": {"n": 1},
                "$set": {"expire_at": dt.datetime.fromtimestamp(expires_at, dt.UTC).replace(tzinfo=None)},
            },
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
        return int(doc["n"])

    # --- the event outbox --------------------------------------------------------------

    @_guarded
    async def enqueue_event(self, event: OutboxEvent) -> bool:
        doc = _event_doc(event)
        doc["mac"] = self._mac("outbox", event.id, _event_mac_fields(doc))
        due = due_at_of(doc)
        if due is not None:
            doc["due_at"] = due
        try:
            await self._outbox.insert_one(doc)
        except DuplicateKeyError:
            return False
        return True

    @_guarded
    async def claim_events(self, owner: str, limit: int, lease_seconds: float, now: float) -> list[OutboxEvent]:
        claimed: list[OutboxEvent] = []
        # due_at: a pending event's next attempt, a delivering one's lease end, absent once
        # delivered or dead (layout 3). One indexed field rather than status with the time:
        # the embedded server serves it by its index where the compound query reads the whole
        # outbox, delivered events included (11 ms a claim with 5,000 of them, measured).
        due = {"due_at": {"$lte": now}}
        started = time.monotonic()

        def waited() -> float:
            return time.monotonic() - started

        while len(claimed) < limit:  # each pass leases a different event, so this ends
            # the lease runs from when this command is sent, not from when the claim began: a
            # claim slowed past the lease (a slow link) would be born expired, and another
            # process would deliver the event a second time
            until = now + waited() + lease_seconds
            lease = {"status": "delivering", "lease_owner": owner, "lease_until": until, "due_at": until}
            before = await self._outbox.find_one_and_update(
                due,
                {"$set": lease},
                # by the index: a sort on another field would sort every due event on each claim
                # (and on MongoDB fail past its in-memory sort limit after a long receiver outage).
                # A delivery cut off takes its turn by its lease's end.
                sort=[("due_at", ASCENDING)],
                return_document=ReturnDocument.BEFORE,
            )
            if before is None:
                break
            if not _was_due(before, now):
                await self._restore_due_at(before, owner)
                continue
            doc = {**before, **lease}
            reason = self._event_rejection(doc)
            event = _event(doc) if reason is None else None
            if event is not None:
                claimed.append(event)
                continue
            # Never handed to the deliverer, which would sign it: dead, for an operator to review.
            reason = reason or "malformed record"
            self._rejected("outbox", doc["_id"], reason, action="dead-lettered for an operator to review")
            await self._outbox.update_one(
                {"_id": doc["_id"], "status": "delivering", "lease_owner": owner},
                {
                    "$set": {
                        "status": "dead",
                        "lease_owner": None,
                        "lease_until": 0.0,
                        "last_error": REJECTED_EVENT.format(reason=reason),
                    },
                    "$unset": {"due_at": ""},
                },
            )
        return claimed

    async def _restore_due_at(self, before: dict[str, Any], owner: str) -> None:
        """A record claimed by a stale ``due_at`` (written by a wxgate of layout 2, still
        running during or after the migration: it sets status and times but not ``due_at``):
        put back what the claim changed, with the ``due_at`` its state means, so that a
        delivered or dead event is not sent again and one leased elsewhere is not sent twice."""
        restored = {name: before.get(name) for name in ("status", "lease_owner", "lease_until")}
        due = due_at_of(before)
        change: dict[str, Any] = {"$set": restored}
        if due is None:
            change["$unset"] = {"due_at": ""}
        else:
            restored["due_at"] = due
        log.warning("outbox_due_at_restored", id=str(before["_id"])[:100], status=str(before.get("status")))
        await self._outbox.update_one({"_id": before["_id"], "lease_owner": owner}, change)

    def _event_rejection(self, doc: dict[str, Any]) -> str | None:
        """Why the event's MAC fails, or None when it holds."""
        try:
            self._verify(doc, "outbox", _event_mac_fields(doc))
        except (SealError, KeyError, TypeError) as exc:
            return _reason(exc)
        return None

    @_guarded
    async def ack_event(self, event_id: str, owner: str, purge_at: float) -> None:
        # purge_at is outside the MAC: a writer who changes it can only shorten the record's
        # life, which deleting it does as well; it sends nothing.
        changes = {"status": "delivered", "lease_owner": None, "lease_until": 0.0, "last_error": None}
        await self._outbox.update_one(
            {"_id": event_id}, {"$set": {**changes, "purge_at": _utc(purge_at)}, "$unset": {"due_at": ""}}
        )

    @_guarded
    async def retry_event(self, event_id: str, owner: str, next_attempt_at: float, error: str) -> None:
        await self._outbox.update_one(
            {"_id": event_id, "status": "delivering"},
            {
                "$set": {
                    "status": "pending",
                    "next_attempt_at": next_attempt_at,
                    "due_at": next_attempt_at,
                    "lease_owner": None,
                    "lease_until": 0.0,
                    "last_error": error,
                },
                "$inc": {"attempts": 1},
            },
        )

    @_guarded
    async def dead_letter_event(self, event_id: str, owner: str, error: str) -> None:
        await self._outbox.update_one(
            {"_id": event_id},
            {
                "$set": {"status": "dead", "lease_owner": None, "lease_until": 0.0, "last_error": error},
                "$unset": {"due_at": ""},
                "$inc": {"attempts": 1},
            },
        )

    @_guarded
    async def list_events(self, status: EventStatus | None, limit: int) -> list[OutboxEvent]:
        # Listed whatever their MAC, so that an operator sees the rejected ones: listing sends nothing.
        query = {} if status is None else {"status": status}
        docs = await self._outbox.find(query).sort("created_at", ASCENDING).limit(limit).to_list(length=limit)
        events = []
        for doc in docs:
            event = _event(doc)
            if event is None:
                self._rejected("outbox", doc.get("_id"), "malformed record", action="left out of the list")
            else:
                events.append(event)
        return events

    @_guarded
    async def requeue_events(self, event_ids: list[str] | None, now: float) -> int:
        query: dict[str, Any] = {"status": "dead"}
        if event_ids is not None:
            query["_id"] = {"$in": event_ids}
        # Only events that hold their MAC go back: requeueing one that fails it would have the
        # deliverer sign whatever a database writer put there (it would be dead-lettered again).
        genuine = []
        async for doc in self._outbox.find(query):
            reason = self._event_rejection(doc)
            if reason is None:
                genuine.append(doc["_id"])
            else:
                self._rejected("outbox", doc["_id"], reason, action="not requeued")
        if not genuine:
            return 0
        result = await self._outbox.update_many(
            {"_id": {"$in": genuine}, "status": "dead"},
            {"$set": {"status": "pending", "next_attempt_at": now, "due_at": now, "attempts": 0}},
        )
        return int(result.modified_count)

    @_guarded
    async def count_events(self) -> dict[str, int]:
        # one command for every status (the metrics refresher runs it within the idle budget)
        counts: dict[str, int] = dict.fromkeys(EVENT_STATUSES, 0)
        pipeline = [{"$group": {"_id": "$status", "n": {"$sum": 1}}}]
        async for row in await command_cursor(self._outbox.aggregate(pipeline)):
            if row["_id"] in counts:
                counts[row["_id"]] = int(row["n"])
        return counts

    @_guarded
    async def purge_events(self, status: EventStatus, older_than: float) -> int:
        result = await self._outbox.delete_many({"status": status, "created_at": {"$lt": older_than}})
        return int(result.deleted_count)


def _user(doc: dict[str, Any]) -> UserRecord | None:
    """The user, or None for a record that only holds keys or phones (no login counted yet)."""
    if "first_seen" not in doc:
        return None
    return UserRecord(
        appid=doc["appid"],
        openid=doc["openid"],
        unionid=doc.get("unionid"),
        first_seen=doc["first_seen"],
        last_seen=doc["last_seen"],
        logins=doc.get("logins", 1),
    )


def _phones(doc: dict[str, Any] | None) -> list[PhoneBinding]:
    slots = (doc or {}).get("phones")
    if not isinstance(slots, dict):
        return []
    bindings = [
        PhoneBinding(
            key=d["key"],
            masked=d["masked"],
            country_code=d["country_code"],
            number=d.get("number"),
            first_seen=d["first_seen"],
            last_seen=d["last_seen"],
        )
        for d in slots.values()
        if isinstance(d, dict)
    ]
    return sorted(bindings, key=lambda p: p.first_seen)


def _latest_phone(doc: dict[str, Any]) -> PhoneBinding | None:
    """The phone bound last (what GET /session shows), from the record's ``phone`` summary."""
    latest = doc.get("phone")
    if not isinstance(latest, dict):
        return None
    try:
        seen = float(latest["last_seen"])
        return PhoneBinding(
            key=str(latest["key"]),
            masked=str(latest["masked"]),
            country_code=str(latest["country_code"]),
            last_seen=seen,
        )
    except (KeyError, TypeError, ValueError):
        return None


# The fields each MAC covers, besides the record's id. For an event, what a delivery is made
# of: where it goes, as what, with which body.
_SESSION_FIELDS = ("appid", "openid", "unionid", "created_at", "expires_at")
_EVENT_MAC_FIELDS = ("type", "appid", "endpoint", "payload")
_SANDBOX_USER_FIELDS = ("appid", "openid", "name", "unionid", "phone", "key", "logins", "created_at")
_TIMES = frozenset({"created_at", "expires_at", "updated_at"})


def _stored_time(t: float) -> float:
    # Whole milliseconds: the test wire-protocol server keeps only about five decimals of a
    # float written by an update, and a time that changed on the way would fail its MAC.
    return round(t, 3)


def _mac_fields(record: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """A record's fields as its MAC covers them; KeyError or TypeError for a malformed one."""
    fields = {name: record[name] for name in names}
    for name in _TIMES.intersection(names):
        value = fields[name]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"field {name!r} is not a time")
        fields[name] = round(value * 1000)  # as stored: see _stored_time
    return fields


def _reason(exc: Exception) -> str:
    if isinstance(exc, KeyError):
        return f"malformed record: no field {exc}"
    if isinstance(exc, TypeError):
        return f"malformed record: {exc}"
    return str(exc)


# purge_at is stored as a datetime, for the TTL index, and only once delivered
_EVENT_FIELDS = [f.name for f in dataclasses.fields(OutboxEvent) if f.name not in ("id", "purge_at")]


def _utc(t: float) -> dt.datetime:
    """A Unix time as MongoDB's TTL indexes want it: a (naive) UTC datetime."""
    return dt.datetime.fromtimestamp(t, dt.UTC).replace(tzinfo=None)


def _unix(value: object) -> float | None:
    """A stored datetime back as a Unix time (the test wire-protocol server returns it as
    text); None when there is none or it is not one."""
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            return None
    if not isinstance(value, dt.datetime):
        return None
    return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).timestamp()


def _event_doc(event: OutboxEvent) -> dict[str, Any]:
    doc = {name: getattr(event, name) for name in _EVENT_FIELDS}
    doc["_id"] = event.id
    return doc


def _was_due(before: dict[str, Any], now: float) -> bool:
    # a hundredth of a second of slack: the test server keeps about five decimals of a float
    due = due_at_of(before)
    return due is not None and due <= now + 0.01


def _event_mac_fields(doc: dict[str, Any]) -> dict[str, Any]:
    return _mac_fields(doc, _EVENT_MAC_FIELDS)


def _event(doc: dict[str, Any]) -> OutboxEvent | None:
    """The event, or None for a record that lacks a field of one (it was not written by a gateway)."""
    fields: dict[str, Any] = {name: doc[name] for name in _EVENT_FIELDS if name in doc}
    try:
        return OutboxEvent(id=doc["_id"], purge_at=_unix(doc.get("purge_at")), **fields)
    except TypeError:
        return None


def auto_key_file(data_dir: str) -> Path:
    """Where ``encryption_key: auto`` keeps the key: ``<parent of data_dir>/keys/<its name>.key``.

    Beside the data directory, not in it, so that a copy of the data alone does not open it;
    named after the directory, so that two data directories side by side keep two keys.
    """
    data = Path(os.path.abspath(data_dir))  # not resolve(): a symlinked data_dir keeps its keys beside the link
    return data.parent / "keys" / f"{data.name or 'storage'}.key"


def _auto_key(data_dir: Path, key_file: Path) -> str:
    private_dir(key_file.parent)
    legacy = data_dir / "storage.key"  # where wxgate kept it before: inside the data
    if legacy.is_file():
        text = legacy.read_text().strip()
        kept = _install(key_file, text)
        if kept != text:
            raise ConfigError(
                f"two different storage keys: {legacy} (from an older wxgate) and {key_file}; keep the one "
                f"that opens the data in {key_file} and delete the other"
            )
        legacy.unlink(missing_ok=True)
        log.info("storage_key_moved", source=str(legacy), destination=str(key_file))
        return kept
    if key_file.is_file():
        os.chmod(key_file, 0o600)
        return key_file.read_text().strip()
    return _install(key_file, new_key_text())


def _install(path: Path, text: str) -> str:
    """Write ``text`` to ``path`` (mode 0600) unless it exists; returns what ``path`` holds then.

    Through a temporary file and a hard link, so that a process starting at the same time
    never reads a half-written key, and the first of two writers wins."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".key-")  # mkstemp: mode 0600
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        try:
            os.link(temporary, path)
        except FileExistsError:
            return path.read_text().strip()
        return text
    finally:
        os.unlink(temporary)
