"""Access tokens shared by every gateway process through storage.

Each process keeps a local copy; on a miss it reads storage; only the process holding
the refresh lease calls WeChat (stable_token, which does not invalidate the previous
token in normal mode), the others wait for its result. A token WeChat rejected
(40001/40014/42001) is passed as ``reject`` so it is never handed out again.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable

from gateway.metrics import Metrics
from gateway.secret import Secret
from gateway.storage import AccessToken, Storage

# Renew this long before WeChat says a token expires (WeChat overlaps old and new for 5 min).
RENEW_MARGIN = 300.0
LEASE_SECONDS = 10.0
WAIT_FOR_PEER = 5.0
POLL_INTERVAL = 0.05

Fetch = Callable[[], Awaitable[tuple[str, int]]]


class AccessTokens:
    def __init__(self, appid: str, storage: Storage, fetch: Fetch, metrics: Metrics | None = None) -> None:
        self.appid = appid
        self.metrics = metrics
        self.storage = storage
        self.fetch = fetch
        self.owner = f"{uuid.uuid4().hex[:12]}"
        self.lease_name = f"access_token:{appid}"
        self.refreshes = 0
        self._local: AccessToken | None = None
        self._lock = asyncio.Lock()

    def _usable(self, token: AccessToken | None, reject: str | None) -> bool:
        return token is not None and token.token != reject and time.time() < token.expires_at - RENEW_MARGIN

    async def get(self, reject: str | None = None) -> Secret:
        if self._usable(self._local, reject):
            assert self._local is not None
            return Secret(self._local.token)
        async with self._lock:  # one waiter per process; the others reuse its result
            if self._usable(self._local, reject):
                assert self._local is not None
                return Secret(self._local.token)
            token = await self._shared_or_refreshed(reject)
            self._local = token
            return Secret(token.token)

    async def _shared_or_refreshed(self, reject: str | None) -> AccessToken:
        deadline = time.monotonic() + WAIT_FOR_PEER
        while True:
            stored = await self.storage.get_access_token(self.appid)
            if self._usable(stored, reject):
                assert stored is not None
                return stored
            if await self.storage.acquire_lease(self.lease_name, self.owner, LEASE_SECONDS):
                try:
                    stored = await self.storage.get_access_token(self.appid)
                    if self._usable(stored, reject):  # a peer refreshed just before we got the lease
                        assert stored is not None
                        return stored
                    return await self._refresh()
                finally:
                    await self.storage.release_lease(self.lease_name, self.owner)
            if time.monotonic() > deadline:
                # The lease holder is stuck or gone; stable_token is safe to call concurrently.
                return await self._refresh()
            await asyncio.sleep(POLL_INTERVAL)

    async def _refresh(self) -> AccessToken:
        token, expires_in = await self.fetch()
        self.refreshes += 1
        if self.metrics is not None:
            self.metrics.token_refreshed(self.appid)
        record = AccessToken(self.appid, token, time.time() + expires_in)
        await self.storage.put_access_token(record)
        return record
