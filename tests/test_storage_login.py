"""The storage methods a request's authentication and a login use (interface version 2):
``get_login`` (the session with the user's keys and latest phone) and ``login_user`` (the
key rotation and the user's record together), the same on every built-in storage and
driver, and the same as the version-1 methods they stand for."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from gateway.storage import LoginSession, PhoneBinding, Storage
from tests.test_storage_contract import KEY_A, KEY_B, KEY_C, with_storage

__all__ = ["with_storage"]  # the fixture, run on memory, mongo over PyMongo and over Motor


def test_login_user_rotates_and_counts(with_storage: Any) -> None:
    async def body(s: Storage) -> None:
        keys, user = await s.login_user("wxapp", "o1", "u1", KEY_A, 100.0)
        assert (keys.session_key, keys.previous_session_key, keys.unionid) == (KEY_A, None, "u1")
        assert (user.logins, user.first_seen, user.last_seen, user.unionid) == (1, 100.0, 100.0, "u1")
        keys, user = await s.login_user("wxapp", "o1", None, KEY_A, 150.0)  # the same key again
        assert (keys.session_key, keys.previous_session_key, user.logins, user.last_seen) == (KEY_A, None, 2, 150.0)
        keys, user = await s.login_user("wxapp", "o1", None, KEY_B, 200.0)
        assert (keys.session_key, keys.previous_session_key, keys.unionid) == (KEY_B, KEY_A, "u1")
        assert (user.logins, user.first_seen, user.unionid) == (3, 100.0, "u1")
        assert await s.get_session_keys("wxapp", "o1") == keys
        assert await s.get_user("wxapp", "o1") == user

    with_storage(body)


def test_concurrent_logins_of_one_user_leave_a_consistent_pair(with_storage: Any) -> None:
    async def body(s: Storage) -> None:
        keys = [KEY_A, KEY_B, KEY_C]
        await asyncio.gather(*(s.login_user("wxapp", "race", None, keys[i % 3], 10.0 + i) for i in range(12)))
        final = await s.get_session_keys("wxapp", "race")
        assert final is not None
        assert final.session_key in keys
        assert final.previous_session_key in keys
        assert final.previous_session_key != final.session_key
        user = await s.get_user("wxapp", "race")
        assert user is not None
        assert (user.logins, user.first_seen) == (12, 10.0)

    with_storage(body)


def test_get_login_brings_keys_and_the_latest_phone(with_storage: Any) -> None:
    async def body(s: Storage) -> None:
        now = time.time()
        assert await s.get_login("h-none") is None
        await s.put_login_session(LoginSession("h1", "wxapp", "o1", None, now, now + 60))
        session, keys = await s.get_login("h1") or (None, None)
        assert session is not None
        assert (session.openid, session.bound_phone, keys) == ("o1", None, None)  # no key, no phone yet
        await s.login_user("wxapp", "o1", "u1", KEY_A, now)
        await s.login_user("wxother", "o1", None, KEY_C, now)  # another app's user, same openid
        await s.bind_phone("wxapp", "o1", PhoneBinding("k1", "138****1111", "86"), 100.0)
        await s.bind_phone("wxapp", "o1", PhoneBinding("k2", "139****2222", "86"), 200.0)
        await s.bind_phone("wxapp", "o1", PhoneBinding("k1", "138****1111", "86"), 300.0)  # the first, again
        found = await s.get_login("h1")
        assert found is not None
        session, keys = found
        assert keys == await s.get_session_keys("wxapp", "o1")
        assert keys is not None
        assert keys.session_key == KEY_A
        assert session.bound_phone is not None
        assert (session.bound_phone.key, session.bound_phone.masked) == ("k1", "138****1111")
        assert session == LoginSession(
            "h1", "wxapp", "o1", None, session.created_at, session.expires_at, session.bound_phone
        )
        await s.delete_login_session("h1")
        assert await s.get_login("h1") is None  # revoked: gone at once

    with_storage(body)
