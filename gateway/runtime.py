"""The running gateway: storage, per-app WeChat clients and pipelines, built once."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from tornado.httpclient import AsyncHTTPClient

from gateway.config import AppConfig, Config
from gateway.delivery import Deliverer
from gateway.events import Events
from gateway.hooks import Hooks
from gateway.pipeline import Pipeline
from gateway.sandbox import SandboxApp, SandboxWorld
from gateway.storage import Storage
from gateway.wechat.client import WeChatClient

SANDBOX_UPSTREAM_PATH = "/_sandbox/upstream"


@dataclass(frozen=True, slots=True)
class AppRuntime:
    config: AppConfig
    wechat: WeChatClient
    pipelines: Mapping[str, Pipeline]


class Gateway:
    """Everything a request needs, built from one :class:`Config`.

    ``self_url`` is where this gateway itself listens (``http://127.0.0.1:PORT``):
    apps with ``upstream: sandbox`` call the sandbox mounted there, over real HTTP.
    """

    def __init__(
        self,
        config: Config,
        self_url: str,
        http: AsyncHTTPClient | None = None,
        storage: Storage | None = None,
        hooks: Hooks | None = None,
    ) -> None:
        self.config = config
        self.storage: Storage = storage if storage is not None else config.storage_cls(config.storage_options)
        self.hooks = hooks if hooks is not None else Hooks()
        self.deliverer = Deliverer(self.storage, config.webhooks, http) if config.webhooks.active else None
        self.events = Events(self.storage, config.webhooks, self.deliverer.wake if self.deliverer else lambda: None)
        self.sandbox: SandboxWorld | None = None
        if config.uses_sandbox:
            self.sandbox = SandboxWorld(
                apps=[
                    SandboxApp(app.name, app.appid, app.secret.get_secret_value())
                    for app in config.apps.values()
                    if app.uses_sandbox
                ]
            )
        self.apps: dict[str, AppRuntime] = {}
        for name, app in config.apps.items():
            base = self_url.rstrip("/") + SANDBOX_UPSTREAM_PATH if app.uses_sandbox else app.upstream
            self.apps[name] = AppRuntime(
                config=app,
                wechat=WeChatClient(app, base, self.storage, http),
                pipelines={flow: Pipeline.build(flow, steps) for flow, steps in config.flows[name].items()},
            )

    async def start(self) -> None:
        await self.storage.start()
        if self.deliverer is not None:
            self.deliverer.start()
        self.hooks.notify(
            "wxgate_startup", config_digest=self.config.digest, apps=list(self.config.apps), pid=os.getpid()
        )

    async def close(self) -> None:
        if self.deliverer is not None:
            await self.deliverer.stop()
        self.hooks.notify("wxgate_shutdown", pid=os.getpid())
        await self.hooks.drain()
        await self.storage.close()
