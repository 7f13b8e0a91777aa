"""After a host was killed: is every record whole? Reads the database directly, on the storage
host, and opens each record with the mongo storage plugin itself, so that its own seals and
MAC checks decide (not a copy of them, which would drift from the plugin's record layout).

    WXGATE_STORAGE_KEY=... python -m bench.multihost_check --uri mongodb://... --database wxgate

Prints one JSON object: counts, every outbox record's status, and ``problems`` (empty when
everything holds):
- every user's session keys open (seal and MAC), and the previous key differs from the current;
- every login session holds its MAC and names an existing user;
- every outbox event is pending, delivered or dead, and holds its MAC;
- the plugin logged no ``storage_record_rejected`` while reading them.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import sys
from typing import Any

from pydantic import SecretStr

from gateway.logs import configure_logging
from wxgate_plugins.storages.mongo import MongoOptions, MongoStorage

SETTLED = ("pending", "delivered", "dead")
MAX_PROBLEMS = 50


async def check(uri: str, database: str, key: str) -> dict[str, Any]:
    log = io.StringIO()
    configure_logging("json", stream=log)  # the plugin's rejections, counted below
    storage = MongoStorage(MongoOptions(uri=uri, database=database, encryption_key=SecretStr(key)))
    await storage.start()
    problems: list[str] = []
    counts: dict[str, Any] = {}
    statuses: dict[str, str] = {}
    try:
        db = storage.db
        users = [(d["appid"], d["openid"]) for d in await db.users.find({}, {"appid": 1, "openid": 1}).to_list(None)]
        counts["users"] = len(users)
        with_keys = 0
        for appid, openid in users:
            keys = await storage.get_session_keys(appid, openid)
            if keys is None:
                continue
            with_keys += 1
            if keys.previous_session_key == keys.session_key:
                problems.append(f"user {openid}: previous session key equals the current one")
        counts["users_with_keys"] = with_keys

        session_ids = [d["_id"] for d in await db.sessions.find({}, {"_id": 1}).to_list(None)]
        counts["sessions"] = len(session_ids)
        for token_hash in session_ids:
            session = await storage.get_login_session(token_hash)
            if session is None:
                problems.append(f"session {str(token_hash)[:12]}…: fails its MAC")
            elif await storage.get_user(session.appid, session.openid) is None:
                problems.append(f"session {str(token_hash)[:12]}…: names no existing user")

        by_status: dict[str, int] = {}
        for doc in await db.outbox.find({}).to_list(None):
            status = str(doc.get("status"))
            statuses[str(doc["_id"])] = status
            by_status[status] = by_status.get(status, 0) + 1
            if status not in SETTLED:
                problems.append(f"outbox {doc['_id']}: status {status}")
            reason = storage._event_rejection(doc)
            if reason is not None:
                problems.append(f"outbox {doc['_id']}: {reason}")
            elif status == "dead" and str(doc.get("last_error", "")).startswith("not delivered:"):
                problems.append(f"outbox {doc['_id']}: dead-lettered by a MAC check")
        counts["outbox"] = by_status
    finally:
        await storage.close()
    for line in log.getvalue().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event") == "storage_record_rejected":
            problems.append(
                f"rejected by the plugin: {entry.get('collection')} {entry.get('id')}: {entry.get('reason')}"
            )
    return {
        "counts": counts,
        "problems": problems[:MAX_PROBLEMS],
        "problem_count": len(problems),
        "events": statuses,  # outbox id (event id:endpoint) -> status
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--uri", required=True)
    parser.add_argument("--database", required=True)
    args = parser.parse_args()
    result = asyncio.run(check(args.uri, args.database, os.environ["WXGATE_STORAGE_KEY"]))
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
