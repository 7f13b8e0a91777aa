"""In-process storage: for development, tests and single-process demos.

Nothing survives a restart and nothing is shared between processes; use ``mongo`` for
that. Expired login sessions are dropped on read and swept now and then on write.
"""

from __future__ import annotations

import time
from typing import ClassVar

from pydantic import Field

from gateway import LoginSession, SessionKeys, Storage, StorageOptions


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
        self._writes = 0

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

    def _sweep(self) -> None:
        now = time.time()
        for key in [k for k, s in self.sessions.items() if s.expired(now)]:
            del self.sessions[key]
        while len(self.sessions) > self.max_sessions:
            del self.sessions[next(iter(self.sessions))]
