"""The storage interface: what steps and the gateway may keep between requests.

A storage plugin subclasses :class:`Storage`, declares ``name``, ``version`` and an
``Options`` model, and registers under the ``wxgate.storages`` entry point. Every
method is a coroutine; implementations must be safe to call concurrently.

It covers session keys and login sessions, users and their phones, access tokens
shared by all processes (with a lease so one process refreshes), and the event
outbox. The same contract test suite (tests/test_storage_contract.py) runs against
every built-in storage.
"""

from __future__ import annotations

import dataclasses
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, get_args

from pydantic import BaseModel, ConfigDict

# 2: list_login_sessions and delete_login_sessions (revoking by user), and the sandbox's
# simulated users and tokens, are new abstract methods, which a storage written for 1 lacks.
STORAGE_API_VERSION = 2
# The interface version that added each method, so that a storage written for an older
# version is refused with the version it needs, not only a list of missing methods.
METHODS_ADDED_IN = {
    "delete_login_session": 2,
    "list_login_sessions": 2,
    "delete_login_sessions": 2,
    "put_sandbox_user": 2,
    "get_sandbox_user": 2,
    "put_sandbox_tokens": 2,
    "get_sandbox_tokens": 2,
    # Not abstract: the defaults below compose them from version-1 methods, so a storage
    # written before them keeps working, with more round trips per flow.
    "get_login": 2,
    "login_user": 2,
}

EventStatus = Literal["pending", "delivering", "delivered", "dead"]
# Read off the Literal so that the CLI's choices, the outbox gauge and the storages' counts cannot drift from it.
EVENT_STATUSES: tuple[EventStatus, ...] = get_args(EventStatus)


@dataclass(frozen=True, slots=True)
class SessionKeys:
    """The newest session_key WeChat gave for (appid, openid), and the one before it."""

    appid: str
    openid: str
    unionid: str | None
    session_key: str
    previous_session_key: str | None
    updated_at: float


@dataclass(frozen=True, slots=True)
class LoginSession:
    """What a login token (stored as its hash) stands for."""

    token_hash: str
    appid: str
    openid: str
    unionid: str | None
    created_at: float
    expires_at: float
    # The user's latest bound phone, read with the session by ``get_login`` (None: none bound,
    # or the session came from ``get_login_session``, which does not read it).
    bound_phone: PhoneBinding | None = None

    def expired(self, now: float | None = None) -> bool:
        return (now if now is not None else time.time()) >= self.expires_at


@dataclass(frozen=True, slots=True)
class UserRecord:
    appid: str
    openid: str
    unionid: str | None
    first_seen: float
    last_seen: float
    logins: int


@dataclass(frozen=True, slots=True)
class PhoneBinding:
    """A phone number seen for a user. ``key`` identifies the number (the number itself,
    or its keyed hash); ``number`` is None when only the hash and masked form are kept."""

    key: str
    masked: str
    country_code: str
    number: str | None = None
    first_seen: float = 0.0
    last_seen: float = 0.0


@dataclass(frozen=True, slots=True)
class AccessToken:
    appid: str
    token: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class SandboxUserRecord:
    """A user of the sandbox's simulated WeChat (not of the gateway's apps): what WeChat
    itself would remember of them. ``created_at`` orders them for dropping the oldest."""

    appid: str
    openid: str
    name: str
    unionid: str
    phone: str
    session_key: str
    logins: int
    created_at: float


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """One delivery to one endpoint; ``id`` is unique and makes enqueueing idempotent."""

    id: str
    type: str
    appid: str
    endpoint: str
    payload: dict[str, Any]
    created_at: float
    status: EventStatus = "pending"
    attempts: int = 0
    next_attempt_at: float = 0.0
    lease_owner: str | None = None
    lease_until: float = 0.0
    last_error: str | None = None
    # When a delivered event is removed (Unix time), set by ack_event; None until delivered.
    purge_at: float | None = None


class StorageOptions(BaseModel):
    """Base of every storage's options; unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Storage(ABC):
    """All methods may raise :class:`gateway.errors.StorageUnavailable` when the backend is down."""

    name: ClassVar[str]
    version: ClassVar[str]
    api_version: ClassVar[int] = STORAGE_API_VERSION
    Options: ClassVar[type[StorageOptions]] = StorageOptions

    def __init__(self, options: StorageOptions) -> None:
        self.options = options

    def before_fork(self) -> None:  # noqa: B027 (optional hook, empty by default)
        """Called once in the parent process before workers start (and before ``start``
        in a single process): start what all workers share, e.g. an embedded server."""

    async def start(self) -> None:  # noqa: B027 (optional hook, empty by default)
        """Connect, create indexes; called once per process before the first request."""

    async def close(self) -> None:  # noqa: B027 (optional hook, empty by default)
        """Release connections; called once per process at shutdown."""

    async def ping(self) -> None:  # noqa: B027 (optional hook, empty by default)
        """Raise StorageUnavailable when the backend cannot be reached."""

    # --- session keys and login sessions -------------------------------------------------

    @abstractmethod
    async def rotate_session_key(self, appid: str, openid: str, unionid: str | None, session_key: str) -> SessionKeys:
        """Record the newest session_key; the former one, if different, becomes previous."""

    @abstractmethod
    async def get_session_keys(self, appid: str, openid: str) -> SessionKeys | None: ...

    async def get_login(self, token_hash: str) -> tuple[LoginSession, SessionKeys | None] | None:
        """The session for this token hash (expired or not) with, in ``bound_phone``, the user's
        latest phone, and the user's session keys: what authenticating a request needs, in as
        few round trips as the storage can (the mongo storage: one). None when there is no
        session. This default reads them one after another."""
        session = await self.get_login_session(token_hash)
        if session is None:
            return None
        keys = await self.get_session_keys(session.appid, session.openid)
        phones = await self.get_phones(session.appid, session.openid)
        latest = max(phones, key=lambda p: (p.last_seen, p.first_seen)) if phones else None
        return dataclasses.replace(session, bound_phone=latest), keys

    async def login_user(
        self, appid: str, openid: str, unionid: str | None, session_key: str, now: float
    ) -> tuple[SessionKeys, UserRecord]:
        """A login: ``rotate_session_key`` and ``upsert_user`` together, in as few round trips
        as the storage can (the mongo storage: one, the keys living in the user's record).
        This default calls the two."""
        keys = await self.rotate_session_key(appid, openid, unionid, session_key)
        return keys, await self.upsert_user(appid, openid, keys.unionid, now)

    async def find_phone_owners(self, appid: str, key: str) -> list[str] | None:
        """The openids of the app's users with a phone binding of this key (``PhoneBinding.key``),
        for an operator's look-up by number; never on a request's path. None when the storage
        cannot say (this default): the console then says phone look-up is unavailable."""
        return None

    @abstractmethod
    async def put_login_session(self, session: LoginSession) -> None: ...

    async def sweep_expired_sessions(self, now: float) -> int:
        """Remove the session records that expired before ``now``; how many went. The gateway
        calls it every few minutes in each process, in place of an idle outbox poll. This
        default does nothing: for storages whose records expire by themselves (a TTL index,
        or a sweep while writing). Expired sessions are refused on read either way."""
        return 0

    @abstractmethod
    async def get_login_session(self, token_hash: str) -> LoginSession | None:
        """The session for this token hash, expired or not (the caller tells them apart)."""

    @abstractmethod
    async def delete_login_session(self, token_hash: str) -> bool:
        """Revoke the token: gone for every process at once (no process may cache
        sessions). True when a session was removed, False when there was none."""

    @abstractmethod
    async def list_login_sessions(self, appid: str, openid: str) -> list[LoginSession]:
        """The user's sessions that have not expired, oldest first (for ``wxgate sessions list``)."""

    @abstractmethod
    async def delete_login_sessions(self, appid: str, openid: str) -> int:
        """Revoke every token of the user, for every process at once; returns how many
        session records were removed."""

    # --- users and phones ---------------------------------------------------------------

    @abstractmethod
    async def upsert_user(self, appid: str, openid: str, unionid: str | None, now: float) -> UserRecord:
        """Create or refresh the user: first_seen kept, last_seen set, logins counted."""

    @abstractmethod
    async def get_user(self, appid: str, openid: str) -> UserRecord | None: ...

    @abstractmethod
    async def bind_phone(self, appid: str, openid: str, phone: PhoneBinding, now: float) -> None:
        """Record that the user has this phone (idempotent by phone.key; first_seen kept)."""

    @abstractmethod
    async def get_phones(self, appid: str, openid: str) -> list[PhoneBinding]: ...

    # --- access tokens, shared by every process ----------------------------------------

    @abstractmethod
    async def get_access_token(self, appid: str) -> AccessToken | None: ...

    @abstractmethod
    async def put_access_token(self, token: AccessToken) -> None: ...

    @abstractmethod
    async def acquire_lease(self, name: str, owner: str, seconds: float) -> bool:
        """Take the named lease if it is free or expired; True when ``owner`` holds it now."""

    @abstractmethod
    async def release_lease(self, name: str, owner: str) -> None: ...

    # --- the sandbox's simulated WeChat (only when an app has ``upstream: sandbox``) -------

    @abstractmethod
    async def put_sandbox_user(self, user: SandboxUserRecord, max_users: int) -> None:
        """Store the simulated user, replacing the record of (appid, openid); when that makes
        more than ``max_users`` of them, drop the oldest by ``created_at`` first."""

    @abstractmethod
    async def get_sandbox_user(self, appid: str, openid: str) -> SandboxUserRecord | None: ...

    @abstractmethod
    async def put_sandbox_tokens(self, appid: str, tokens: Mapping[str, float]) -> None:
        """Replace the access tokens the sandbox has issued for the app (token: expiry)."""

    @abstractmethod
    async def get_sandbox_tokens(self, appid: str) -> dict[str, float]:
        """The tokens last put for the app, expired or not ({} when none)."""

    # --- rate-limit counters, shared by every process ----------------------------------

    @abstractmethod
    async def incr_counter(self, key: str, expires_at: float) -> int:
        """Add one to the counter ``key`` (created at 0) and return the new value; the
        counter may be forgotten after ``expires_at``."""

    # --- the event outbox --------------------------------------------------------------

    @abstractmethod
    async def enqueue_event(self, event: OutboxEvent) -> bool:
        """Store a pending event; False (and no change) when its id exists already."""

    @abstractmethod
    async def claim_events(self, owner: str, limit: int, lease_seconds: float, now: float) -> list[OutboxEvent]:
        """Lease up to ``limit`` due events (pending and due, or delivering with an expired lease)."""

    @abstractmethod
    async def ack_event(self, event_id: str, owner: str, purge_at: float) -> None:
        """Mark delivered, to be removed at ``purge_at`` (a Unix time: now plus
        ``webhooks.retention``); the storage may remove it any time after that."""

    @abstractmethod
    async def retry_event(self, event_id: str, owner: str, next_attempt_at: float, error: str) -> None:
        """Back to pending, one more attempt counted, not due before ``next_attempt_at``."""

    @abstractmethod
    async def dead_letter_event(self, event_id: str, owner: str, error: str) -> None:
        """Give up on the event; it stays stored as dead until requeued or purged."""

    @abstractmethod
    async def list_events(self, status: EventStatus | None, limit: int) -> list[OutboxEvent]: ...

    @abstractmethod
    async def requeue_events(self, event_ids: list[str] | None, now: float) -> int:
        """Dead events (all when ``event_ids`` is None) back to pending; returns how many."""

    @abstractmethod
    async def count_events(self) -> dict[str, int]:
        """How many events are in each status (for metrics)."""

    @abstractmethod
    async def purge_events(self, status: EventStatus, older_than: float) -> int:
        """Delete events of that status created before ``older_than``; returns how many."""
