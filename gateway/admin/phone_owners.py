"""Which users of an app have a phone binding with a given key: the reverse of
``Storage.get_phones``, for looking a user up by number.

The storage interface has no such method yet. A storage that offers
``find_phone_owners(appid, key) -> list[openid]`` is asked; the two built-in storages
are read where they keep phones (the MongoDB one: in each user's record, under a field
named by a digest of the key, so the query reads the app's users without an index);
any other storage makes phone lookup unavailable, and the console says so.
"""

from __future__ import annotations

from typing import Any

from gateway.errors import StorageUnavailable
from gateway.storage import Storage

MAX_OWNERS = 20


async def phone_owners(storage: Storage, appid: str, key: str) -> list[str] | None:
    """The openids (at most :data:`MAX_OWNERS`), or None when this storage cannot say."""
    finder: Any = getattr(storage, "find_phone_owners", None)
    if callable(finder):
        return list(await finder(appid, key))[:MAX_OWNERS]
    phones: Any = getattr(storage, "phones", None)
    if storage.name == "memory" and isinstance(phones, dict):
        return sorted(openid for (app, openid), bindings in phones.items() if app == appid and key in bindings)[
            :MAX_OWNERS
        ]
    if storage.name == "mongo" and hasattr(storage, "db"):
        return await _mongo_owners(storage, appid, key)
    return None


async def _mongo_owners(storage: Any, appid: str, key: str) -> list[str]:
    from pymongo.errors import PyMongoError

    if storage.db is None:
        raise StorageUnavailable(log_detail="mongo storage used before start()")
    try:
        from wxgate_plugins.storages.mongo_schema import phone_slot
    except ImportError:  # the layout before phones moved into the users' records
        collection, selector = storage.db.phones, {"appid": appid, "key": key}
    else:
        collection, selector = storage.db.users, {"appid": appid, f"phones.{phone_slot(key)}.key": key}
    try:
        cursor = collection.find(selector, {"openid": 1}).limit(MAX_OWNERS)
        docs = await cursor.to_list(length=MAX_OWNERS)
    except PyMongoError as exc:
        raise StorageUnavailable(log_detail=f"mongo phone owners: {type(exc).__name__}") from None
    return sorted({str(doc["openid"]) for doc in docs})
