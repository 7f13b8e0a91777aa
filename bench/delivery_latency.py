#!/usr/bin/env python3
"""Webhook delivery latency: from the moment an event is queued in a request (the answer
can go) to its arrival at the receiver, with a gateway on the mongo storage.

    python bench/delivery_latency.py [--events 50] [--poll-interval 1.0]

Starts an nx-27017 server, a receiver (a Tornado handler in this process, answering 200)
and a gateway (deliverer and outbox gauges running, as in `wxgate serve`) in this
process; queues ``--events`` events one after another, each after the one before has
arrived, and prints the median, p90 and maximum in milliseconds, and the storage
commands the process sent while idle for two seconds before them.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import tornado.web
from pymongo import monitoring

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.config import parse_config  # noqa: E402
from gateway.hooks import Hooks  # noqa: E402
from gateway.runtime import Gateway  # noqa: E402
from wxgate_plugins.storages.embedded_mongo import EmbeddedMongo, free_port  # noqa: E402

STORAGE_KEY = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="


class Counter(monitoring.CommandListener):
    def __init__(self) -> None:
        self.n = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.n += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


async def measure(uri: str, events: int, poll_interval: float) -> dict[str, Any]:
    arrived: asyncio.Queue[float] = asyncio.Queue()

    class Hook(tornado.web.RequestHandler):
        def post(self) -> None:
            arrived.put_nowait(time.perf_counter())
            self.write("ok")

    port = free_port()
    server = tornado.web.Application([(r"/hook", Hook)]).listen(port, "127.0.0.1")
    database = "lat" + uuid.uuid4().hex[:8]
    text = f"""
storage: {{plugin: mongo, options: {{uri: "{uri}", database: {database}, encryption_key: "{STORAGE_KEY}"}}}}
webhooks:
  endpoints: [{{name: crm, url: "http://127.0.0.1:{port}/hook", secret: crm-secret-0123456789}}]
  poll_interval: {poll_interval}
pipelines:
  login: [code2session, issue_session]
apps:
  shop: {{appid: wx00000000000shop, secret: shop-secret-1234, upstream: "http://127.0.0.1:9"}}
"""
    gateway = Gateway(parse_config(text, "<latency>"), "http://127.0.0.1:9", hooks=Hooks())
    counter = Counter()
    monitoring.register(counter)  # for every client made from now on: this script's only
    await gateway.start()
    app = gateway.config.apps["shop"]
    try:
        await asyncio.sleep(1)
        before = counter.n
        await asyncio.sleep(2)
        idle = counter.n - before
        latencies = []
        for _ in range(events):
            await gateway.events.emit("user.login", app, {"openid": "o1"}, key=uuid.uuid4().hex)
            answered = time.perf_counter()  # the request could answer now
            latencies.append((await asyncio.wait_for(arrived.get(), 30) - answered) * 1000)
    finally:
        await gateway.close()
        server.stop()
    ordered = sorted(latencies)
    return {
        "events": events,
        "median_ms": round(statistics.median(ordered), 2),
        "p90_ms": round(ordered[int(len(ordered) * 0.9) - 1], 2),
        "max_ms": round(ordered[-1], 2),
        "idle_commands_in_2s": idle,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=50)
    parser.add_argument("--poll-interval", type=float, default=1.0)
    args = parser.parse_args()
    mongo = EmbeddedMongo(db="memory")
    try:
        result = asyncio.run(measure(mongo.start(), args.events, args.poll_interval))
    finally:
        mongo.stop()
    print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
