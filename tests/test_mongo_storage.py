"""What only the mongo storage promises: sealed secrets, key rotation, embedded mode,
bounded failure when MongoDB is away. Real wire-protocol server, real sockets."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from gateway.config import parse_config
from gateway.errors import ConfigError, StorageUnavailable
from gateway.sealing import key_id, new_key_text, parse_key
from gateway.storage import AccessToken
from tests.helpers import free_port
from tests.test_storage_contract import KEY_A, KEY_B
from wxgate_plugins.storages.mongo import MongoOptions, MongoStorage


def mongo(uri: str, database: str, key: str, old: list[str] | None = None, **extra: Any) -> MongoStorage:
    options = MongoOptions(uri=uri, database=database, encryption_key=key, old_encryption_keys=old or [], **extra)
    return MongoStorage(options)


def test_secrets_are_sealed_at_rest(mongo_uri: str) -> None:
    key = new_key_text()
    db = "seal" + uuid.uuid4().hex[:8]

    async def main() -> None:
        storage = mongo(mongo_uri, db, key)
        await storage.start()
        try:
            await storage.rotate_session_key("wxapp", "o1", None, KEY_A)
            await storage.rotate_session_key("wxapp", "o1", None, KEY_B)
            await storage.put_access_token(AccessToken("wxapp", "ACCESS-TOKEN-VALUE", time.time() + 60))
            raw_keys = await storage.db.session_keys.find_one({"_id": "wxapp:o1"})
            raw_token = await storage.db.tokens.find_one({"_id": "wxapp"})
            text = repr(raw_keys) + repr(raw_token)
            for secret in (KEY_A, KEY_B, "ACCESS-TOKEN-VALUE"):
                assert secret not in text
            assert raw_keys["key"].startswith(f"v1.{key_id(parse_key(key))}.")
            # a sealed key copied onto another user's record does not open there: absent, logged
            await storage.db.session_keys.insert_one({**raw_keys, "_id": "wxapp:o2"})
            with capture_logs() as logs:
                assert await storage.get_session_keys("wxapp", "o2") is None
            (rejected,) = [e for e in logs if e["event"] == "storage_record_rejected"]
            assert (rejected["collection"], rejected["id"]) == ("session_keys", "wxapp:o2")
            assert raw_keys["key"] not in repr(rejected)
        finally:
            await storage.close()

    asyncio.run(main())


def test_key_rotation_old_records_open_new_writes_use_new_key(mongo_uri: str) -> None:
    old, new = new_key_text(), new_key_text()
    db = "rot" + uuid.uuid4().hex[:8]

    async def main() -> None:
        first = mongo(mongo_uri, db, old)
        await first.start()
        await first.rotate_session_key("wxapp", "o1", None, KEY_A)
        await first.close()

        rotated = mongo(mongo_uri, db, new, old=[old])
        await rotated.start()
        keys = await rotated.get_session_keys("wxapp", "o1")
        assert keys is not None
        assert keys.session_key == KEY_A
        await rotated.rotate_session_key("wxapp", "o1", None, KEY_B)
        raw = await rotated.db.session_keys.find_one({"_id": "wxapp:o1"})
        assert raw["key"].split(".")[1] == key_id(parse_key(new))
        assert raw["prev"].split(".")[1] == key_id(parse_key(new))  # re-sealed on write
        await rotated.close()

        new_only = mongo(mongo_uri, db, new)
        await new_only.start()
        keys = await new_only.get_session_keys("wxapp", "o1")
        assert keys is not None
        assert (keys.session_key, keys.previous_session_key) == (KEY_B, KEY_A)
        await new_only.close()

        # without the key that wrote it, the record is absent (the user logs in again), not a 500
        old_only = mongo(mongo_uri, db, old)
        await old_only.start()
        with capture_logs() as logs:
            assert await old_only.get_session_keys("wxapp", "o1") is None
        assert [e["collection"] for e in logs if e["event"] == "storage_record_rejected"] == ["session_keys"]
        await old_only.close()

    asyncio.run(main())


def test_unreachable_mongodb_is_storage_unavailable_quickly() -> None:
    storage = mongo(f"mongodb://127.0.0.1:{free_port()}/", "x", new_key_text(), timeout_ms=300)

    async def main() -> None:
        started = time.monotonic()
        with pytest.raises(StorageUnavailable):
            await storage.start()
        assert time.monotonic() - started < 5

    asyncio.run(main())


def test_embedded_mode_starts_its_own_server_and_keeps_a_private_key(tmp_path: Path) -> None:
    options = MongoOptions(uri="embedded", data_dir=str(tmp_path / "data"))
    storage = MongoStorage(options)

    async def main() -> None:
        await storage.start()
        try:
            await storage.upsert_user("wxapp", "o1", None, 1.0)
            assert storage.embedded is not None
            assert storage.uri is not None
            assert storage.uri.startswith("mongodb://127.0.0.1:")
        finally:
            await storage.close()

    asyncio.run(main())
    assert storage.embedded is not None
    assert storage.embedded.process is not None
    assert storage.embedded.process.poll() is not None  # stopped with the storage
    # the key beside the data, not in it: a copy of the data directory alone does not open it
    key_file = tmp_path / "keys" / "data.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert len(parse_key(key_file.read_text())) == 32
    assert not (tmp_path / "data" / "storage.key").exists()
    assert (tmp_path / "data" / "wxgate.db").is_file()

    again = MongoStorage(options)

    async def reopen() -> None:
        await again.start()
        try:
            user = await again.get_user("wxapp", "o1")
            assert user is not None
            assert user.first_seen == 1.0
        finally:
            await again.close()

    asyncio.run(reopen())


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ('{uri: "mongodb://db:27017"}', "'auto' only works with uri: embedded"),
        ('{uri: "mongodb://db:27017", encryption_key: "c2hvcnQ="}', "32 bytes"),
        ('{uri: "postgres://db"}', "expected 'embedded' or a mongodb://"),
        ("{driver: mongoengine}", "'pymongo' or 'motor'"),
    ],
)
def test_option_errors_name_the_line(options: str, message: str) -> None:
    app = "{appid: wxa00000000000000, secret: s, upstream: sandbox}"
    text = f"storage:\n  plugin: mongo\n  options: {options}\napps:\n  a: {app}\n"
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "x.yaml")
    assert str(caught.value).startswith("x.yaml:3: storage.options.")
    assert message in str(caught.value)
    assert "c2hvcnQ=" not in str(caught.value)  # a key is never echoed
