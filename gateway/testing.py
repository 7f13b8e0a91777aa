"""Test helpers for wxgate and for plugin authors.

- :func:`make_context` builds a :class:`~gateway.context.Context` to await one step on.
- :class:`GatewayTestCase` serves a whole configuration (the embedded default unless
  told otherwise) on a real port, with the sandbox as WeChat, in Tornado's
  ``AsyncHTTPTestCase``; its helpers play the mini program.
- :class:`LeakWatch` records what those tests showed and the secrets they must not show;
  the pytest plugin :mod:`gateway.pytest_plugin` fails the session if one leaked.
- :func:`capture_log` records the gateway's log events, as they are written (after
  redaction), so a test can assert that no ``hook_failed`` was logged;
  ``GatewayTestCase`` captures each test's in ``self.log_events``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlencode

import structlog
from pydantic import SecretStr
from tornado.httpclient import HTTPResponse
from tornado.testing import AsyncHTTPTestCase
from tornado.web import Application

from gateway.app import make_app
from gateway.config import DEFAULT_CONFIG, AppConfig, Config, WebhooksConfig, load_config, parse_config
from gateway.context import Context, Session
from gateway.events import Events
from gateway.hooks import Hooks
from gateway.registry import Registry
from gateway.runtime import Gateway
from gateway.secret import Secret
from gateway.storage import Storage
from gateway.wechat.client import WeChatClient

TEST_APPID = "wx0000000000test0"


class LeakWatch:
    """What the test runs showed clients, and the secrets they must never show.

    ``GatewayTestCase`` feeds it; the pytest plugin :mod:`gateway.pytest_plugin` checks it
    once at the end of the session, so every test's traffic is covered.
    """

    bodies: list[str] = []
    # Never in a response or a log line: session keys, app secrets, access tokens.
    secrets: set[str] = set()
    # Sent to the client by design, never logged: login tokens, phone numbers.
    log_secrets: set[str] = set()

    @classmethod
    def leaks(cls, bodies: list[str], logs: str) -> list[str]:
        found = []
        for secret in cls.secrets:
            if len(secret) >= 8 and (secret in logs or any(secret in body for body in bodies)):
                found.append(secret[:4] + "...")
        found += [secret[:4] + "..." for secret in cls.log_secrets if len(secret) >= 8 and secret in logs]
        return found


class CapturedLog:
    """The log events written while :func:`capture_log` was active, each a dict as the
    renderer got it: ``event``, ``level``, the event's keys (redacted) and, for an
    exception, its formatted ``exception``."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def named(self, event: str) -> list[dict[str, Any]]:
        """The events called ``event`` (e.g. ``"hook_failed"``), in order."""
        return [e for e in self.events if e.get("event") == event]

    def assert_none(self, event: str = "hook_failed") -> None:
        """Fail, showing what was logged, if an event called ``event`` was written. The
        default is the one a hook that raised leaves: hooks never fail a request, so the
        log is where a broken hook shows."""
        found = self.named(event)
        if found:
            shown = "\n".join(
                ", ".join(f"{k}={v!r}" for k, v in e.items() if k != "exception") + f"\n{e.get('exception', '')}"
                for e in found
            )
            raise AssertionError(f"{len(found)} {event} event(s) logged:\n{shown}")

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.events)

    def __len__(self) -> int:
        return len(self.events)


@contextmanager
def capture_log() -> Iterator[CapturedLog]:
    """Record every log event written inside the block, without changing the output.

    The recorder joins structlog's configured processors just before the renderer, so
    the events are captured as they are written (secrets already redacted) and still
    reach the real output: unlike ``structlog.testing.capture_logs``, the leak check of
    :mod:`gateway.pytest_plugin` still reads them. An ``async def`` hook runs in the
    background: wait for it (``GatewayTestCase``: ``self.io_loop.run_sync(self.gateway.hooks.drain)``)
    before asserting on what it logged.
    """
    captured = CapturedLog()
    processors = list(structlog.get_config()["processors"])

    def record(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        captured.events.append(dict(event_dict))
        return event_dict

    # before the renderer, which turns the dict into text; with no renderer at all, last
    at = len(processors) - 1 if processors else 0
    structlog.configure(processors=[*processors[:at], record, *processors[at:]])
    try:
        yield captured
    finally:
        structlog.configure(processors=processors)


def make_app_config(**overrides: Any) -> AppConfig:
    values: dict[str, Any] = {
        "name": "test",
        "appid": TEST_APPID,
        "secret": SecretStr("test-secret"),
        "upstream": "sandbox",
    }
    values.update(overrides)
    return AppConfig(**values)


def make_context(
    fields: Mapping[str, str] | None = None,
    *,
    app: AppConfig | None = None,
    storage: Storage | None = None,
    session: Session | None = None,
    data: dict[str, Any] | None = None,
    token: str | None = None,
    upstream_url: str = "http://127.0.0.1:9",
    flow: str = "test",
    events: Events | None = None,
) -> Context:
    """A context for awaiting one step directly: ``await MyStep(MyStep.Options())(ctx)``."""
    app = app or make_app_config()
    if storage is None:
        memory = Registry.discover().storages["memory"]
        storage = memory(memory.Options())
    return Context(
        app=app,
        flow=flow,
        fields=dict(fields or {}),
        token=token,
        wechat=WeChatClient(app, upstream_url, storage),
        events=events if events is not None else Events(storage, WebhooksConfig()),
        storage=storage,
        log=structlog.get_logger("wxgate.test"),
        request_id="test",
        session=session,
        data=dict(data or {}),
    )


def make_session(openid: str = "o-test", session_key: str = "", previous: str | None = None) -> Session:
    return Session(
        openid=openid,
        unionid=None,
        session_key=Secret(session_key),
        previous_session_key=Secret(previous) if previous else None,
    )


class GatewayTestCase(AsyncHTTPTestCase):
    """Serves ``config_text`` (YAML) or ``config_path`` over real HTTP for each test."""

    config_path: str = str(DEFAULT_CONFIG)
    config_text: str | None = None
    env: Mapping[str, str] = {}
    app_name = "demo"
    # Run on this storage whatever the file says (None: as configured). Tests of
    # flows use memory; the storage's own tests run against every backend.
    storage_plugin: str | None = "memory"
    # Hook implementations to register besides the installed ones (wxgate.hooks entry points).
    hook_plugins: list[object] = []

    def setUp(self) -> None:
        # before the gateway starts, so its start-up events are captured too
        self.log_events = self.enterContext(capture_log())
        super().setUp()

    def get_config(self) -> Config:
        if self.config_text is not None:
            config = parse_config(self.config_text, "<test config>", env=self.env)
        else:
            config = load_config(self.config_path, env=self.env)
        if self.storage_plugin is not None and config.storage_cls.name != self.storage_plugin:
            cls = Registry.discover().storages[self.storage_plugin]
            config = dataclasses.replace(config, storage_cls=cls, storage_options=cls.Options())
        return config

    def get_app(self) -> Application:
        self.config = self.get_config()
        hooks = Hooks(plugins=self.hook_plugins)
        self.gateway = Gateway(self.config, f"http://127.0.0.1:{self.get_http_port()}", hooks=hooks)
        self.io_loop.run_sync(self.gateway.start)
        return make_app(self.gateway)

    def tearDown(self) -> None:
        self.io_loop.run_sync(self.gateway.close)
        LeakWatch.secrets.update(app.secret.get_secret_value() for app in self.config.apps.values())
        if self.gateway.sandbox is not None:
            LeakWatch.secrets.update(self.gateway.sandbox.issued_secrets)
        super().tearDown()

    # --- HTTP -------------------------------------------------------------------------

    def call(
        self,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        method: str = "POST",
        token: str | None = None,
        headers: Mapping[str, str] | None = None,
        raw_body: bytes | None = None,
        query: Mapping[str, str] | None = None,
    ) -> tuple[int, dict[str, Any], HTTPResponse]:
        """One request; returns (status, JSON body, response)."""
        all_headers = {"Content-Type": "application/json"}
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        all_headers.update(headers or {})
        payload = raw_body if raw_body is not None else (json.dumps(body).encode() if body is not None else None)
        if method == "GET":
            payload = None
        elif payload is None:
            payload = b""
        url = path + ("?" + urlencode(query) if query else "")
        response = self.fetch(url, method=method, body=payload, headers=all_headers, raise_error=False)
        text = response.body.decode("utf-8", "replace") + json.dumps(dict(response.headers))
        if not path.startswith("/_sandbox/"):  # the fake WeChat may show its own secrets
            LeakWatch.bodies.append(text)
        parsed = json.loads(response.body) if response.body else {}
        for key in ("token", "phoneNumber", "purePhoneNumber"):
            if isinstance(parsed.get(key), str):
                LeakWatch.log_secrets.add(parsed[key])
        return response.code, parsed, response

    # --- the mini program -------------------------------------------------------------

    def wx_login(self, user: str, app: str | None = None) -> str:
        status, body, _ = self.call(f"/_sandbox/{app or self.app_name}/wx.login", {"user": user})
        assert status == 200, body
        return str(body["code"])

    def get_phone_number(self, user: str, app: str | None = None, **extra: Any) -> dict[str, Any]:
        status, body, _ = self.call(f"/_sandbox/{app or self.app_name}/getPhoneNumber", {"user": user, **extra})
        assert status == 200, body
        return body

    def get_user_profile(self, user: str, app: str | None = None, **extra: Any) -> dict[str, Any]:
        status, body, _ = self.call(f"/_sandbox/{app or self.app_name}/getUserProfile", {"user": user, **extra})
        assert status == 200, body
        return body

    def login(self, user: str, app: str | None = None) -> dict[str, Any]:
        """wx.login then the gateway's login; returns the gateway's answer (token, openid...)."""
        code = self.wx_login(user, app)
        status, body, _ = self.call(f"/v1/{app or self.app_name}/login", {"code": code})
        assert status == 200, body
        return body

    def arm_fault(self, api: str, **fault: Any) -> None:
        status, body, _ = self.call("/_sandbox/_faults", {"api": api, **fault})
        assert status == 200, body
