"""A gateway and its console, really served, for the console's tests and `make screenshots`.

:class:`ConsoleServer` runs a :class:`~gateway.runtime.Gateway` in a thread with its own
event loop: the flows on one port, the admin listener's application (the console's routes
included) on a second. A thread rather than a Tornado test case because the browser tests
drive Chromium synchronously: the server must go on serving while the test waits. Its
helpers play the mini program and the operator, over HTTP.

``python -m tests.console_harness docs/console.png`` writes the README's screenshot.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from email.message import Message
from pathlib import Path
from typing import Any, TypeVar

import tornado.netutil
from tornado.httpserver import HTTPServer

from gateway.admin_listener import make_admin_app
from gateway.app import make_app
from gateway.config import load_config, parse_config
from gateway.runtime import Gateway
from gateway.testing import LeakWatch

T = TypeVar("T")

ADMIN_TOKEN = "console-test-token-5b1f0c9e7d"
HASH_KEY = "console-phone-hash-key-0123"
SECRETS = ("console-demo-secret-0001", "console-shop-secret-0002", "console-vault-secret-003")

PHONE_STEPS = """[check_session, {{decrypt: {{kind: phone}}}}, watermark, mask_guard, {persist},
        {{webhook: {{event: phone.bound}}}}, respond]"""

CONFIG = """\
server:
  host: 127.0.0.1
  port: 0
  admin: {{host: 127.0.0.1, port: 0, token: {token}}}
storage: {{plugin: memory}}
webhooks:
  endpoints:
    - {{name: crm, url: "{crm}", secret: "crm-secret-0123456789"}}
  max_attempts: 1          # a refused delivery is dead-lettered at once
  poll_interval: 0.2
pipelines:
  login: [code2session, persist_user, {{issue_session: {{ttl: 7200}}}}, {{webhook: {{event: user.login}}}}]
  phone: {plain}
apps:
  demo:                    # numbers kept as they are
    appid: wx0000000000demo0
    secret: {s0}
    upstream: sandbox
  shop:                    # numbers kept as keyed hashes
    appid: wx0000000000shop0
    secret: {s1}
    upstream: sandbox
    pipelines:
      phone: {hashed}
  vault:                   # only masked numbers
    appid: wx000000000vault0
    secret: {s2}
    upstream: sandbox
    pipelines:
      phone: {masked}
"""


def console_config(receiver_url: str) -> str:
    return CONFIG.format(
        token=ADMIN_TOKEN,
        crm=receiver_url,
        s0=SECRETS[0],
        s1=SECRETS[1],
        s2=SECRETS[2],
        plain=PHONE_STEPS.format(persist="persist_phone"),
        hashed=PHONE_STEPS.format(persist=f"{{persist_phone: {{store_phone: hashed, hash_key: {HASH_KEY}}}}}"),
        masked=PHONE_STEPS.format(persist="{persist_phone: {store_phone: masked}}"),
    )


class ConsoleServer:
    def __init__(self, config_text: str, path: Path | None = None) -> None:
        """``path``: serve the text from this file (which reloads then re-read)."""
        if path is not None:
            path.write_text(config_text)
        self.config = (
            load_config(path, env={}) if path is not None else parse_config(config_text, "<console test>", env={})
        )
        admin = self.config.server.admin
        self.token = admin.token.get_secret_value() if admin is not None else ""
        self.gateway: Gateway | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None
        LeakWatch.secrets.update([self.token, HASH_KEY, *SECRETS])

    def start(self) -> ConsoleServer:
        self._thread = threading.Thread(target=self._serve, name="console-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(30) or self._failure is not None:
            raise RuntimeError(f"the console server did not start: {self._failure!r}")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(30)

    def _serve(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to start(), which waits for the thread
            self._failure = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        flows_sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
        admin_sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
        self.port = flows_sockets[0].getsockname()[1]
        self.admin_port = admin_sockets[0].getsockname()[1]
        gateway = self.gateway = Gateway(self.config, self.url)
        await gateway.start()
        flows = HTTPServer(make_app(gateway))
        flows.add_sockets(flows_sockets)
        admin = HTTPServer(make_admin_app(gateway))  # the admin listener's application, console included
        admin.add_sockets(admin_sockets)
        self._ready.set()
        await self._stop.wait()
        for server in (flows, admin):
            server.stop()
            await server.close_all_connections()
        await gateway.close()

    def in_loop(self, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)`` called in the server's event loop, as a signal handler would be."""
        assert self._loop is not None

        async def call() -> T:
            return function(*args)

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(30)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    # --- HTTP ---------------------------------------------------------------------------

    def request(
        self,
        url: str,
        body: Any = None,
        *,
        method: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Message, bytes]:
        """(status, headers (case-insensitive), body)."""
        data = body if isinstance(body, bytes) else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(url, data, {"Content-Type": "application/json", **(headers or {})})
        request.method = method or ("POST" if data is not None else "GET")
        try:
            with urllib.request.urlopen(request, timeout=20) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers, exc.read()

    def admin(
        self, path: str, body: Any = None, *, token: str | None = "", method: str | None = None
    ) -> tuple[int, Any]:
        """One admin API call with the token (``token=None``: without one)."""
        headers = {} if token is None else {"Authorization": f"Bearer {token or self.token}"}
        status, _, raw = self.request(self.admin_url + path, body, method=method, headers=headers)
        return status, json.loads(raw) if raw else None

    def flow(self, path: str, body: Any = None, token: str | None = None, method: str | None = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        status, _, raw = self.request(self.url + path, body, method=method, headers=headers)
        parsed = json.loads(raw) if raw else None
        if isinstance(parsed, dict) and isinstance(parsed.get("token"), str):
            LeakWatch.log_secrets.add(parsed["token"])
        return status, parsed

    # --- the mini program -------------------------------------------------------------

    def login(self, user: str, app: str = "demo") -> str:
        status, body = self.flow(f"/_sandbox/{app}/wx.login", {"user": user})
        assert status == 200, body
        status, body = self.flow(f"/v1/{app}/login", {"code": body["code"]})
        assert status == 200, body
        return str(body["token"])

    def bind_phone(self, user: str, token: str, phone: str, app: str = "demo") -> None:
        status, fields = self.flow(f"/_sandbox/{app}/getPhoneNumber", {"user": user, "phone": phone})
        assert status == 200, fields
        status, body = self.flow(
            f"/v1/{app}/phone", {"encryptedData": fields["encryptedData"], "iv": fields["iv"]}, token=token
        )
        assert status == 200, body
        LeakWatch.log_secrets.add(phone)

    def openid(self, token: str, app: str = "demo") -> str:
        status, body = self.flow(f"/v1/{app}/session", token=token)
        assert status == 200, body
        return str(body["openid"])


def traffic(server: ConsoleServer) -> dict[str, str]:
    """Some logins, phone bindings and refusals; returns each user's token."""
    tokens = {}
    for i, user in enumerate(["amy", "ben", "cai", "dora"]):
        tokens[user] = server.login(user)
        server.bind_phone(user, tokens[user], f"+861381234567{i}")
    for _ in range(3):
        server.flow("/v1/demo/login", {"code": "not-a-code"})  # refused: errors by code
    tokens["shop:eve"] = server.login("eve", app="shop")
    server.bind_phone("eve", tokens["shop:eve"], "+8613900001111", app="shop")
    return tokens


def screenshot(out: Path) -> None:
    """The console's pipelines page after some traffic, as docs/console.png."""
    from playwright.sync_api import sync_playwright

    from tests.webhook_receiver import Receiver

    receiver = Receiver().start()
    server = ConsoleServer(console_config(receiver.url)).start()
    try:
        traffic(server)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium")
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.goto(server.admin_url + "/admin/")
            page.fill("#token", server.token)
            page.click("#sign-in")
            page.click("nav [data-view=pipelines]")
            page.wait_for_selector("#pipelines .step-table td")
            page.screenshot(path=str(out), full_page=False)
            browser.close()
    finally:
        server.stop()
        receiver.stop()


if __name__ == "__main__":
    screenshot(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/console.png"))
