"""A real HTTP server that receives webhooks, for tests: scripted answers, recorded calls."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver:
    def __init__(self, port: int | None = None, secret: str = "crm-secret-0123456789") -> None:
        self.secret = secret
        self.received: list[dict[str, Any]] = []
        self.script: list[int] = []  # statuses to answer, in order; then 200
        self.delay = 0.0
        self.arrived = 0  # requests read, answered or not
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None
        # The socket is bound now, to the given port or one the kernel picks (no free_port():
        # between choosing a port and binding it another process could take it), and listens
        # from start() on: until then the receiver is down (connections are refused) but its
        # URL is known and its port held.
        bound = ThreadingHTTPServer(("127.0.0.1", port or 0), self._handler(), bind_and_activate=False)
        try:
            bound.server_bind()
        except BaseException:
            bound.server_close()
            raise
        self._bound: ThreadingHTTPServer | None = bound
        self.port: int = bound.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Receiver:
        server, self._bound = self._bound, None
        if server is None:  # started again after stop()
            server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        else:
            server.server_activate()
        self.server = server
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    receiver.arrived += 1
                if receiver.delay:
                    time.sleep(receiver.delay)
                with receiver.lock:
                    status = receiver.script.pop(0) if receiver.script else 200
                    receiver.received.append(
                        {"headers": dict(self.headers), "body": body, "status": status, "path": self.path}
                    )
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def stop(self) -> None:
        if self._bound is not None:  # never started
            self._bound.server_close()
            self._bound = None
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def delivered(self) -> list[dict[str, Any]]:
        """Payloads answered with 2xx, each with a verified signature."""
        with self.lock:
            calls = list(self.received)
        out = []
        for call in calls:
            if 200 <= call["status"] < 300:
                assert self.verify(call), "bad signature"
                out.append(json.loads(call["body"]))
        return out

    def verify(self, call: dict[str, Any]) -> bool:
        """What the README tells receivers to do."""
        timestamp = call["headers"]["X-Wxgate-Timestamp"]
        expected = hmac.new(self.secret.encode(), timestamp.encode() + b"." + call["body"], hashlib.sha256).hexdigest()
        return hmac.compare_digest("sha256=" + expected, call["headers"]["X-Wxgate-Signature"])
