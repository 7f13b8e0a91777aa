"""The engine of ``wxgate dry-run``: run one flow of a configuration against the sandbox, as a mini
program would, and show what each step did. Nothing real is touched: storage is
memory, webhooks are off, every app talks to the in-process sandbox."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
from typing import Any

import tornado.httpclient
from tornado.httpserver import HTTPServer

from gateway.app import make_app
from gateway.config import Config, WebhooksConfig
from gateway.errors import ConfigError
from gateway.hooks import Hooks
from gateway.hookspecs import hookimpl
from gateway.registry import Registry
from gateway.runtime import Gateway


class _Timings:
    def __init__(self) -> None:
        self.steps: dict[str, float] = {}
        self.failed: dict[str, Any] | None = None

    def reset(self) -> None:
        self.steps, self.failed = {}, None

    @hookimpl
    def wxgate_request_finished(self, flow: str, steps: dict[str, float]) -> None:
        self.steps = dict(steps)

    @hookimpl
    def wxgate_step_failed(self, step: str, error: str, status: int) -> None:
        self.failed = {"step": step, "error": error, "status": status}


def sandboxed(config: Config) -> Config:
    memory = Registry.discover().storages["memory"]
    return dataclasses.replace(
        config,
        storage_cls=memory,
        storage_options=memory.Options(),
        webhooks=WebhooksConfig(),
        apps={name: app.model_copy(update={"upstream": "sandbox"}) for name, app in config.apps.items()},
    )


async def dry_run(config: Config, app: str, flow: str, user: str, extra: dict[str, Any]) -> dict[str, Any]:
    if app not in config.apps:
        raise ConfigError(f"{config.path}: no app {app!r} (apps: {', '.join(config.apps)})")
    if flow not in config.flows[app]:
        raise ConfigError(f"{config.path}: app {app!r} has no flow {flow!r} (flows: {', '.join(config.flows[app])})")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.setblocking(False)
    port = sock.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    timings = _Timings()
    gateway = Gateway(sandboxed(config), base, hooks=Hooks(plugins=[timings]))
    await gateway.start()
    server = HTTPServer(make_app(gateway))
    server.add_sockets([sock])
    http = tornado.httpclient.AsyncHTTPClient()

    async def call(path: str, body: dict[str, Any], token: str | None = None) -> tuple[int, dict[str, Any]]:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        response = await http.fetch(
            base + path, method="POST", body=json.dumps(body), headers=headers, raise_error=False
        )
        return response.code, json.loads(response.body or b"{}")

    async def device(action: str, **extra: Any) -> dict[str, Any]:
        status, body = await call(f"/_sandbox/{app}/{action}", {"user": user, **extra})
        if status != 200:
            raise ConfigError(f"the sandbox refused {action}: {body}")
        return body

    try:
        token = None
        fields: dict[str, Any] = {}
        if flow in ("phone", "phone_code", "phone_cloud", "userinfo", "userinfo_cloud"):
            if "login" not in config.flows[app]:
                raise ConfigError(
                    f"{config.path}: dry-run of {flow!r} logs in first, but app {app!r} has no login flow"
                )
            code = (await device("wx.login"))["code"]
            status, login = await call(f"/v1/{app}/login", {"code": code})
            if status != 200:
                return {"flow": "login", "status": status, "response": login, "steps": timings.steps}
            token = login["token"]
        if flow in ("login", "phone_oneshot"):
            fields["code"] = (await device("wx.login"))["code"]
        if flow in ("phone", "phone_oneshot"):
            phone = await device("getPhoneNumber")
            fields.update(encryptedData=phone["encryptedData"], iv=phone["iv"])
        if flow == "phone_code":
            fields["code"] = (await device("getPhoneNumber"))["code"]
        if flow == "phone_cloud":
            fields["cloudID"] = (await device("getPhoneNumber", cloud=True))["cloudID"]
        if flow == "userinfo_cloud":
            fields["cloudID"] = (await device("getUserProfile", cloud=True))["cloudID"]
        if flow == "userinfo":
            profile = await device("getUserProfile")
            fields.update({k: profile[k] for k in ("encryptedData", "iv", "rawData", "signature")})
        fields.update(extra)
        endpoint = "phone" if flow.startswith("phone") else "userinfo" if flow.startswith("userinfo") else flow
        timings.reset()
        status, response = await call(f"/v1/{app}/{endpoint}", fields, token)
        shown = {k: (v[:24] + "..." if isinstance(v, str) and len(v) > 27 else v) for k, v in fields.items()}
        result: dict[str, Any] = {"flow": flow, "request": shown, "status": status, "response": response}
        result["steps_ms"] = timings.steps
        if timings.failed:
            result["failed"] = timings.failed
        return result
    finally:
        server.stop()
        await gateway.close()


def run_dry(config: Config, app: str, flow: str, user: str, extra: dict[str, Any]) -> dict[str, Any]:
    return asyncio.run(dry_run(config, app, flow, user, extra))
