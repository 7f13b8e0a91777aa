"""Which users of an app have a phone binding with a given key: the reverse of
``Storage.get_phones``, for looking a user up by number. Asked of the storage
(``find_phone_owners``); a storage that cannot say makes phone look-up unavailable, and
the console says so.
"""

from __future__ import annotations

from gateway.storage import Storage

MAX_OWNERS = 20


async def phone_owners(storage: Storage, appid: str, key: str) -> list[str] | None:
    """The openids (at most :data:`MAX_OWNERS`), or None when this storage cannot say."""
    owners = await storage.find_phone_owners(appid, key)
    return None if owners is None else owners[:MAX_OWNERS]
