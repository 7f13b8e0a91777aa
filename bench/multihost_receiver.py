"""The drill's webhook receiver host: verifies each delivery as the README tells receivers to,
and logs two JSON lines per delivery: one when it arrives (event id, sender address, time),
one when it is answered (the same, with the answer's time and the signature's verdict). The
drill reads them to count deliveries and duplicates, and to see deliveries in flight.

    WXGATE_WEBHOOK_SECRET=S python -m bench.multihost_receiver --port 9000 --log FILE --delay-file FILE

The answer waits the number of seconds in ``--delay-file`` (0 when absent), so that the
drill can keep deliveries in flight when it cuts a host off.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import signal
import time
from pathlib import Path

import tornado.httpserver
import tornado.web

MAX_AGE = 300


class Hook(tornado.web.RequestHandler):
    def initialize(self, secret: bytes, log: Path, delay_file: Path) -> None:
        self.secret = secret
        self.log_path = log
        self.delay_file = delay_file

    def check_xsrf_cookie(self) -> None:
        pass

    def verified(self) -> bool:
        timestamp = self.request.headers.get("X-Wxgate-Timestamp", "")
        if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > MAX_AGE:
            return False
        mac = hmac.new(self.secret, timestamp.encode() + b"." + self.request.body, hashlib.sha256)
        return hmac.compare_digest("sha256=" + mac.hexdigest(), self.request.headers.get("X-Wxgate-Signature", ""))

    def log_line(self, line: dict[str, object]) -> None:
        with self.log_path.open("a") as out:
            out.write(json.dumps(line) + "\n")

    async def post(self) -> None:
        arrived = time.time()
        ok = self.verified()
        event_id = self.request.headers.get("X-Wxgate-Event-Id", "")
        if ok:
            try:
                ok = json.loads(self.request.body).get("id") == event_id
            except ValueError:
                ok = False
        # first a line at arrival: the drill cuts a host off while one of its deliveries is here
        self.log_line({"id": event_id, "from": self.request.remote_ip, "arrived": arrived})
        try:
            delay = float(self.delay_file.read_text())
        except (OSError, ValueError):
            delay = 0.0
        if delay > 0:
            await asyncio.sleep(delay)
        line = {
            "id": event_id,
            "from": self.request.remote_ip,
            "arrived": arrived,
            "answered": time.time(),
            "verified": ok,
        }
        self.log_line(line)
        self.set_status(204 if ok else 401)  # a 4xx is final: a bad signature would be dead-lettered
        self.finish()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--log", required=True)
    parser.add_argument("--delay-file", required=True)
    args = parser.parse_args()
    app = tornado.web.Application(
        [
            (
                r"/hook",
                Hook,
                {
                    "secret": os.environ["WXGATE_WEBHOOK_SECRET"].encode(),
                    "log": Path(args.log),
                    "delay_file": Path(args.delay_file),
                },
            )
        ],
        log_function=lambda handler: None,
    )
    server = tornado.httpserver.HTTPServer(app)
    server.listen(args.port, args.host)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.stop()


if __name__ == "__main__":
    asyncio.run(main())
