"""The storage interface: what steps and the gateway may keep between requests.

A storage plugin subclasses :class:`Storage`, declares ``name``, ``version`` and an
``Options`` model, and registers under the ``wxgate.storages`` entry point. Every
method is a coroutine; implementations must be safe to call concurrently.

Interface version 1 covers session keys and login sessions; users, access tokens and
the event outbox come with the MongoDB storage (see docs/plugins.md).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

STORAGE_API_VERSION = 1


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

    def expired(self, now: float | None = None) -> bool:
        return (now if now is not None else time.time()) >= self.expires_at


class StorageOptions(BaseModel):
    """Base of every storage's options; unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Storage(ABC):
    name: ClassVar[str]
    version: ClassVar[str]
    api_version: ClassVar[int] = STORAGE_API_VERSION
    Options: ClassVar[type[StorageOptions]] = StorageOptions

    def __init__(self, options: StorageOptions) -> None:
        self.options = options

    async def start(self) -> None:  # noqa: B027 (optional hook, empty by default)
        """Connect, create indexes; called once before the first request."""

    async def close(self) -> None:  # noqa: B027 (optional hook, empty by default)
        """Release connections; called once at shutdown."""

    @abstractmethod
    async def rotate_session_key(self, appid: str, openid: str, unionid: str | None, session_key: str) -> SessionKeys:
        """Record the newest session_key; the former one, if different, becomes previous."""

    @abstractmethod
    async def get_session_keys(self, appid: str, openid: str) -> SessionKeys | None: ...

    @abstractmethod
    async def put_login_session(self, session: LoginSession) -> None: ...

    @abstractmethod
    async def get_login_session(self, token_hash: str) -> LoginSession | None:
        """The session for this token hash, expired or not (the caller tells them apart)."""
