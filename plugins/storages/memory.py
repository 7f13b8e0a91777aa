"""In-process storage: for development, tests and single-process demos.

Nothing survives a restart and nothing is shared between processes; use ``mongo`` for
that. Expired login sessions are returned as such (the caller tells them apart) and
swept now and then on write; delivered outbox events past their ``purge_at`` are removed
during claims and acks (a heap keeps each sweep to the events it removes).
Every method completes without awaiting, so each is atomic in the event loop.

Records carry no MAC here, unlike in ``mongo``: they live only in this process's memory,
which nothing but the process itself can write, and whoever can write into it can also
read the keys a MAC would use.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import ClassVar

from pydantic import Field

from gateway import StorageOptions
from gateway.storage import (
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


class MemoryOptions(StorageOptions):
    max_sessions: int = Field(1_000_000, ge=1, description="Oldest sessions are dropped past this count.")


class MemoryStorage(Storage):
    name: ClassVar[str] = "memory"
    version: ClassVar[str] = "1.0.0"
    Options: ClassVar[type[StorageOptions]] = MemoryOptions

    def __init__(self, options: StorageOptions) -> None:
        super().__init__(options)
        assert isinstance(options, MemoryOptions)
        self.max_sessions = options.max_sessions
        self.keys: dict[tuple[str, str], SessionKeys] = {}
        self.sessions: dict[str, LoginSession] = {}
        self.users: dict[tuple[str, str], UserRecord] = {}
        self.phones: dict[tuple[str, str], dict[str, PhoneBinding]] = {}
        self.tokens: dict[str, AccessToken] = {}
        self.leases: dict[str, tuple[str, float]] = {}
        self.events: dict[str, OutboxEvent] = {}
        # (purge_at, id) of every delivered event, soonest first: the sweep looks at the top only
        self._purges: list[tuple[float, str]] = []
        self.counters: dict[str, tuple[int, float]] = {}
        # insertion order is creation order (a replaced record keeps its place): the oldest first
        self.sandbox_users: dict[tuple[str, str], SandboxUserRecord] = {}
        self.sandbox_tokens: dict[str, dict[str, float]] = {}
        self._writes = 0

    # --- session keys and login sessions -------------------------------------------------

    async def rotate_session_key(self, appid: str, openid: str, unionid: str | None, session_key: str) -> SessionKeys:
        current = self.keys.get((appid, openid))
        previous = current.previous_session_key if current else None
        if current is not None and current.session_key != session_key:
            previous = current.session_key
        record = SessionKeys(
            appid=appid,
            openid=openid,
            unionid=unionid or (current.unionid if current else None),
            session_key=session_key,
            previous_session_key=previous,
            updated_at=time.time(),
        )
        self.keys[(appid, openid)] = record
        return record

    async def get_session_keys(self, appid: str, openid: str) -> SessionKeys | None:
        return self.keys.get((appid, openid))

    async def put_login_session(self, session: LoginSession) -> None:
        self.sessions[session.token_hash] = session
        self._writes += 1
        if self._writes % 1024 == 0 or len(self.sessions) > self.max_sessions:
            self._sweep()

    async def get_login_session(self, token_hash: str) -> LoginSession | None:
        return self.sessions.get(token_hash)

    async def delete_login_session(self, token_hash: str) -> bool:
        return self.sessions.pop(token_hash, None) is not None

    async def list_login_sessions(self, appid: str, openid: str) -> list[LoginSession]:
        # A scan rather than an index by user: only the operator's CLI lists or revokes by
        # user, and it cannot attach to this storage, so the scan never runs on a request.
        now = time.time()
        mine = [s for s in self.sessions.values() if s.appid == appid and s.openid == openid and not s.expired(now)]
        return sorted(mine, key=lambda s: s.created_at)

    async def delete_login_sessions(self, appid: str, openid: str) -> int:
        doomed = [h for h, s in self.sessions.items() if s.appid == appid and s.openid == openid]
        for token_hash in doomed:
            del self.sessions[token_hash]
        return len(doomed)

    def _sweep(self) -> None:
        now = time.time()
        for key in [k for k, s in self.sessions.items() if s.expired(now)]:
            del self.sessions[key]
        while len(self.sessions) > self.max_sessions:
            del self.sessions[next(iter(self.sessions))]

    # --- users and phones ---------------------------------------------------------------

    async def upsert_user(self, appid: str, openid: str, unionid: str | None, now: float) -> UserRecord:
        current = self.users.get((appid, openid))
        if current is None:
            record = UserRecord(appid, openid, unionid, first_seen=now, last_seen=now, logins=1)
        else:
            record = replace(current, unionid=unionid or current.unionid, last_seen=now, logins=current.logins + 1)
        self.users[(appid, openid)] = record
        return record

    async def get_user(self, appid: str, openid: str) -> UserRecord | None:
        return self.users.get((appid, openid))

    async def bind_phone(self, appid: str, openid: str, phone: PhoneBinding, now: float) -> None:
        bindings = self.phones.setdefault((appid, openid), {})
        first = bindings[phone.key].first_seen if phone.key in bindings else now
        bindings[phone.key] = replace(phone, first_seen=first, last_seen=now)

    async def get_phones(self, appid: str, openid: str) -> list[PhoneBinding]:
        return sorted(self.phones.get((appid, openid), {}).values(), key=lambda p: p.first_seen)

    async def find_phone_owners(self, appid: str, key: str) -> list[str]:
        """The openids of the app's users with a binding of this phone key (a scan: operators only)."""
        return sorted(openid for (app, openid), bindings in self.phones.items() if app == appid and key in bindings)

    # --- access tokens -----------------------------------------------------------------

    async def get_access_token(self, appid: str) -> AccessToken | None:
        return self.tokens.get(appid)

    async def put_access_token(self, token: AccessToken) -> None:
        self.tokens[token.appid] = token

    async def acquire_lease(self, name: str, owner: str, seconds: float) -> bool:
        now = time.time()
        holder = self.leases.get(name)
        if holder is not None and holder[0] != owner and holder[1] > now:
            return False
        self.leases[name] = (owner, now + seconds)
        return True

    async def release_lease(self, name: str, owner: str) -> None:
        holder = self.leases.get(name)
        if holder is not None and holder[0] == owner:
            del self.leases[name]

    # --- the sandbox's simulated WeChat ------------------------------------------------------

    async def put_sandbox_user(self, user: SandboxUserRecord, max_users: int) -> None:
        key = (user.appid, user.openid)
        new = key not in self.sandbox_users
        self.sandbox_users[key] = user
        while new and len(self.sandbox_users) > max_users:
            del self.sandbox_users[next(iter(self.sandbox_users))]

    async def get_sandbox_user(self, appid: str, openid: str) -> SandboxUserRecord | None:
        return self.sandbox_users.get((appid, openid))

    async def put_sandbox_tokens(self, appid: str, tokens: Mapping[str, float]) -> None:
        self.sandbox_tokens[appid] = dict(tokens)

    async def get_sandbox_tokens(self, appid: str) -> dict[str, float]:
        return dict(self.sandbox_tokens.get(appid, {}))

    # --- rate-limit counters -------------------------------------------------------------

    async def incr_counter(self, key: str, expires_at: float) -> int:
        count = self.counters.get(key, (0, expires_at))[0] + 1
        self.counters[key] = (count, expires_at)
        if len(self.counters) > 100_000:
            now = time.time()
            for stale in [k for k, (_, until) in self.counters.items() if until < now]:
                del self.counters[stale]
        return count

    # --- the event outbox --------------------------------------------------------------

    async def enqueue_event(self, event: OutboxEvent) -> bool:
        if event.id in self.events:
            return False
        self.events[event.id] = event
        return True

    async def claim_events(self, owner: str, limit: int, lease_seconds: float, now: float) -> list[OutboxEvent]:
        self._sweep_delivered(now)
        claimed: list[OutboxEvent] = []
        for event in sorted(self.events.values(), key=lambda e: e.next_attempt_at):
            if len(claimed) >= limit:
                break
            due = event.status == "pending" and event.next_attempt_at <= now
            lost = event.status == "delivering" and event.lease_until <= now
            if due or lost:
                taken = replace(event, status="delivering", lease_owner=owner, lease_until=now + lease_seconds)
                self.events[event.id] = taken
                claimed.append(taken)
        return claimed

    async def ack_event(self, event_id: str, owner: str, purge_at: float) -> None:
        if event_id in self.events:
            self._update(
                event_id, status="delivered", lease_owner=None, lease_until=0.0, last_error=None, purge_at=purge_at
            )
            heapq.heappush(self._purges, (purge_at, event_id))
        self._sweep_delivered(time.time())

    def _sweep_delivered(self, now: float) -> None:
        """Remove the delivered events whose purge_at has come: O(1) when none has, and
        O(log n) for each one removed. An entry whose event has gone (purged) or changed is
        dropped; dead and pending events never have one."""
        while self._purges and self._purges[0][0] <= now:
            purge_at, event_id = heapq.heappop(self._purges)
            event = self.events.get(event_id)
            if event is not None and event.status == "delivered" and event.purge_at == purge_at:
                del self.events[event_id]

    async def retry_event(self, event_id: str, owner: str, next_attempt_at: float, error: str) -> None:
        event = self.events.get(event_id)
        if event is not None and event.status == "delivering":
            self.events[event_id] = replace(
                event,
                status="pending",
                attempts=event.attempts + 1,
                next_attempt_at=next_attempt_at,
                lease_owner=None,
                lease_until=0.0,
                last_error=error,
            )

    async def dead_letter_event(self, event_id: str, owner: str, error: str) -> None:
        event = self.events.get(event_id)
        if event is not None:
            self.events[event_id] = replace(
                event, status="dead", attempts=event.attempts + 1, lease_owner=None, lease_until=0.0, last_error=error
            )

    async def list_events(self, status: EventStatus | None, limit: int) -> list[OutboxEvent]:
        events = [e for e in self.events.values() if status is None or e.status == status]
        return sorted(events, key=lambda e: e.created_at)[:limit]

    async def requeue_events(self, event_ids: list[str] | None, now: float) -> int:
        count = 0
        for event in list(self.events.values()):
            if event.status == "dead" and (event_ids is None or event.id in event_ids):
                self.events[event.id] = replace(event, status="pending", next_attempt_at=now, attempts=0)
                count += 1
        return count

    async def count_events(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for event in self.events.values():
            counts[event.status] = counts.get(event.status, 0) + 1
        return counts

    async def purge_events(self, status: EventStatus, older_than: float) -> int:
        doomed = [e.id for e in self.events.values() if e.status == status and e.created_at < older_than]
        for event_id in doomed:
            del self.events[event_id]
        return len(doomed)

    def _update(self, event_id: str, **changes: object) -> None:
        event = self.events.get(event_id)
        if event is not None:
            self.events[event_id] = replace(event, **changes)  # type: ignore[arg-type]
