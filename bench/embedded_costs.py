#!/usr/bin/env python3
"""What one command costs the MongoDB wire-protocol server of the embedded default
(nx-27017), by the shape of the command: the figures behind storage layout 3.

    python bench/embedded_costs.py [--records 200] [--delivered 5000] [--repeat 5]

Starts one nx-27017 (in memory) and sends each command ``--records`` times, one at a time,
through PyMongo's synchronous client; prints the server's CPU per command (from
/proc/<pid>/stat, so a busy machine changes it less than wall time) and the wall time, the
median of ``--repeat`` rounds. /proc counts CPU in ticks of 10 ms: with fewer than about 200
commands a round, the CPU column cannot show differences of a few tenths of a millisecond.
Pairs:

- the session read (``aggregate`` with the user's record joined) on a collection with a TTL
  index (layout 2) and without one (layout 3): this server applies a collection's TTL indexes
  on every read of it;
- the phone's write selected by ``(appid, openid)`` (the unique index) and by ``_id``;
- an outbox claim (``findAndModify``) on status and time (layout 2) and on ``due_at`` alone
  (layout 3), with ``--delivered`` delivered events in the outbox.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pymongo import ASCENDING, MongoClient, ReturnDocument

from wxgate_plugins.storages.embedded_mongo import EmbeddedMongo


def server_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(pid: int, count: int, repeat: int, command: Callable[[int], Any]) -> tuple[float, float]:
    """(server CPU ms, wall ms) per command, medians of ``repeat`` rounds of ``count``."""
    cpu, wall = [], []
    for _ in range(repeat):
        cpu_before, started = server_cpu(pid), time.perf_counter()
        for i in range(count):
            command(i)
        wall.append((time.perf_counter() - started) / count * 1000)
        cpu.append((server_cpu(pid) - cpu_before) / count * 1000)
    return statistics.median(cpu), statistics.median(wall)


def seed(db: Any, records: int, delivered: int) -> None:
    user = {
        "kid": "k" * 56,
        "keys": ["v1.abcdefgh." + "A" * 70] * 2,
        "first_seen": 1.0,
        "last_seen": 2.0,
        "logins": 3,
        "phone": {"key": "+8613800000000", "masked": "138****0000", "country_code": "86", "last_seen": 1.0},
    }
    db.users.insert_many([{"appid": "wxapp", "openid": f"o{i}", **user} for i in range(records)])
    db.users.create_index([("appid", ASCENDING), ("openid", ASCENDING)], unique=True)
    db.users.create_index([("openid", ASCENDING)])
    session = {"appid": "wxapp", "unionid": None, "created_at": 1.0, "expires_at": 2e9, "mac": "m1.x." + "B" * 44}
    for name, ttl in (("sessions_ttl", True), ("sessions", False)):
        db[name].insert_many([{"_id": f"h{i}", "openid": f"o{i}", **session} for i in range(records)])
        if ttl:
            db[name].create_index([("expire_at", ASCENDING)], expireAfterSeconds=0)
        else:
            db[name].create_index([("expire_at", ASCENDING)])
    payload = {"type": "phone.bound", "payload": {"openid": "o", "phone": "138****0000"}, "created_at": 1.0}
    db.outbox.insert_many(
        [
            {
                "_id": f"d{i}",
                "status": "delivered",
                "next_attempt_at": 1.0,
                "purge_at": dt.datetime(2100, 1, 1),
                **payload,
            }
            for i in range(delivered)
        ]
    )
    db.outbox.create_index([("status", ASCENDING), ("next_attempt_at", ASCENDING)])
    db.outbox.create_index([("due_at", ASCENDING)])
    db.outbox.create_index([("purge_at", ASCENDING)], expireAfterSeconds=0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=200, help="users and sessions, and commands per round")
    parser.add_argument("--delivered", type=int, default=5000, help="delivered events in the outbox")
    parser.add_argument("--repeat", type=int, default=5, help="rounds; the median counts")
    args = parser.parse_args()
    mongo = EmbeddedMongo(db="memory")
    uri = mongo.start()
    assert mongo.process is not None
    pid = mongo.process.pid
    client: MongoClient[dict[str, Any]] = MongoClient(uri)
    try:
        db = client.costs
        seed(db, args.records, args.delivered)
        ids = {doc["openid"]: doc["_id"] for doc in db.users.find({}, {"openid": 1})}
        now = time.time()
        slot = "phones.0123456789abcdef01234567"
        write = {
            "$min": {f"{slot}.first_seen": now},
            "$set": {
                f"{slot}.key": "+8613800000000",
                f"{slot}.masked": "138****0000",
                f"{slot}.country_code": "86",
                f"{slot}.number": "13800000000",
                f"{slot}.last_seen": now,
                "phone": {"key": "+8613800000000", "masked": "138****0000", "country_code": "86", "last_seen": now},
            },
        }

        def session_read(collection: str) -> Callable[[int], Any]:
            def read(i: int) -> Any:
                lookup = {"from": "users", "localField": "openid", "foreignField": "openid", "as": "users"}
                return list(db[collection].aggregate([{"$match": {"_id": f"h{i}"}}, {"$lookup": lookup}]))

            return read

        def claim(query: dict[str, Any], order: str) -> Callable[[int], Any]:
            def run(i: int) -> Any:
                # nothing is due: the claim that finds no other event, as after every delivery
                return db.outbox.find_one_and_update(
                    query, {"$set": {"status": "delivering"}}, sort=[(order, ASCENDING)],
                    return_document=ReturnDocument.BEFORE,
                )  # fmt: skip

            return run

        due_by_status = {
            "$or": [
                {"status": "pending", "next_attempt_at": {"$lte": now}},
                {"status": "delivering", "lease_until": {"$lte": now}},
            ]
        }
        pairs = [
            ("session read, sessions with a TTL index", session_read("sessions_ttl")),
            ("session read, sessions without one", session_read("sessions")),
            (
                "phone write by (appid, openid)",
                lambda i: db.users.update_one({"appid": "wxapp", "openid": f"o{i}"}, write),
            ),
            ("phone write by _id", lambda i: db.users.update_one({"_id": ids[f"o{i}"]}, write)),
            (f"claim on status and time, {args.delivered} delivered", claim(due_by_status, "next_attempt_at")),
            (f"claim on due_at, {args.delivered} delivered", claim({"due_at": {"$lte": now}}, "due_at")),
        ]
        print(f"nx-27017, {args.records} commands a round, median of {args.repeat} rounds")
        print(f"{'command':52} {'server CPU ms':>13} {'wall ms':>8}")
        for label, command in pairs:
            cpu, wall = measure(pid, args.records, args.repeat, command)
            print(f"{label:52} {cpu:13.2f} {wall:8.2f}", flush=True)
    finally:
        client.close()
        mongo.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
