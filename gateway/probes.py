"""Reachability of upstream hosts for /readyz: a TCP connect, cached for a few seconds
(a readiness probe every second must not turn into a connection storm, nor spend
WeChat API quota)."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

CACHE_SECONDS = 10.0
CONNECT_TIMEOUT = 2.0


class Probes:
    def __init__(self) -> None:
        self._cache: dict[tuple[str, int], tuple[float, bool]] = {}

    async def reachable(self, url: str) -> bool:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        cached = self._cache.get((host, port))
        if cached is not None and time.monotonic() - cached[0] < CACHE_SECONDS:
            return cached[1]
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), CONNECT_TIMEOUT)
            writer.close()
            ok = True
        except (OSError, TimeoutError):
            ok = False
        self._cache[(host, port)] = (time.monotonic(), ok)
        return ok
