"""The running gateway.

:class:`Gateway` lives as long as the process: storage, hooks, the sandbox's simulated
WeChat, the webhook deliverer. What a configuration file defines (apps, their WeChat
clients and pipelines) is a :class:`Snapshot`, built once and swapped atomically by
:meth:`Gateway.reload`; a request takes the current snapshot when it starts and
finishes on it, even if a reload happens meanwhile.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass

from tornado.httpclient import AsyncHTTPClient

from gateway.client_address import TrustedProxies
from gateway.config import AppConfig, Config
from gateway.delivery import Deliverer
from gateway.errors import ConfigError
from gateway.events import Events
from gateway.hooks import Hooks
from gateway.logs import get_logger
from gateway.metrics import Metrics, OutboxGaugeRefresher
from gateway.pipeline import Pipeline
from gateway.probes import Probes
from gateway.sandbox import SandboxApp, SandboxWorld
from gateway.session_sweeper import SessionSweeper
from gateway.storage import Storage
from gateway.wechat.client import WeChatClient

SANDBOX_UPSTREAM_PATH = "/_sandbox/upstream"

log = get_logger("wxgate")
# server keys a reload applies at once; the others (sockets, timeouts of the HTTP server,
# logging) keep their start-up values until a restart
APPLIED_ON_RELOAD = ("request_timeout", "max_body_bytes", "trusted_proxies")


def reload_refusal(old: Config, new: Config) -> str | None:
    """Why ``new`` cannot replace ``old`` in a running process, or None. The supervisor
    asks the same question as its workers, so a worker it starts later runs what they run
    (the sandbox, which the process may lack, is refused with several workers anyway)."""
    if (new.storage_cls, new.storage_options) != (old.storage_cls, old.storage_options):
        return f"{new.path}: storage: changes to the storage need a restart"
    return None


def build_pipelines(config: Config) -> dict[str, dict[str, Pipeline]]:
    """Every app's pipelines; raises ConfigError when a step fails to start."""
    return {
        name: {flow: Pipeline.build(flow, steps) for flow, steps in config.flows[name].items()} for name in config.apps
    }


@dataclass(frozen=True, slots=True)
class AppRuntime:
    config: AppConfig
    wechat: WeChatClient
    pipelines: Mapping[str, Pipeline]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything built from one configuration file."""

    config: Config
    apps: Mapping[str, AppRuntime]
    events: Events


class Gateway:
    """``self_url`` is where this gateway itself listens (``http://127.0.0.1:PORT``):
    apps with ``upstream: sandbox`` call the sandbox mounted there, over real HTTP."""

    def __init__(
        self,
        config: Config,
        self_url: str,
        http: AsyncHTTPClient | None = None,
        storage: Storage | None = None,
        hooks: Hooks | None = None,
        metrics: Metrics | None = None,
        worker: int = 0,
    ) -> None:
        self.self_url = self_url.rstrip("/")
        self.http = http
        self.storage: Storage = storage if storage is not None else config.storage_cls(config.storage_options)
        self.hooks = hooks if hooks is not None else Hooks()
        self.metrics = metrics if metrics is not None else Metrics(worker=str(worker))
        self.probes = Probes()
        self.proxies = TrustedProxies(config.server.trusted_proxies)
        # a concrete logger, bound once: binding the lazy proxy per request is slow
        self.access_log = get_logger("wxgate.access").bind()
        self.deliverer = Deliverer(self.storage, config.webhooks, http, self.metrics)
        self.outbox_gauges = OutboxGaugeRefresher(self.storage, self.metrics, turn=self.deliverer.idle_turn)
        self.session_sweeper = SessionSweeper(self.storage, turn=self.deliverer.idle_turn)
        self.sandbox: SandboxWorld | None = (
            # its simulated users and tokens are kept in the gateway's storage, across restarts
            SandboxWorld(apps=[], max_users=config.sandbox.max_users, storage=self.storage)
            if config.uses_sandbox
            else None
        )
        self.current = self._build(config)
        self.metrics.config_loaded(config.digest)

    @property
    def config(self) -> Config:
        return self.current.config

    @property
    def apps(self) -> Mapping[str, AppRuntime]:
        return self.current.apps

    @property
    def events(self) -> Events:
        return self.current.events

    def _build(self, config: Config) -> Snapshot:
        if self.sandbox is not None:
            # the simulated users stay; the apps follow the configuration
            self.sandbox.apps = [
                SandboxApp(app.name, app.appid, app.secret.get_secret_value())
                for app in config.apps.values()
                if app.uses_sandbox
            ]
        apps = {}
        pipelines = build_pipelines(config)
        for name, app in config.apps.items():
            base = self.self_url + SANDBOX_UPSTREAM_PATH if app.uses_sandbox else app.upstream
            wechat = WeChatClient(app, base, self.storage, self.http, self.metrics)
            apps[name] = AppRuntime(config=app, wechat=wechat, pipelines=pipelines[name])
        for name, runtime in apps.items():  # after every step started: a failed build leaves the gauges alone
            runtime.wechat.circuit.watch(functools.partial(self.metrics.circuit, name))
        return Snapshot(config=config, apps=apps, events=Events(self.storage, config.webhooks, self.deliverer.wake))

    def reload(self, config: Config) -> None:
        """Swap in a validated configuration. Raises ConfigError (and keeps the running
        one) for what cannot change in a running process."""
        old = self.current.config
        refusal = reload_refusal(old, config)
        if refusal is None and config.uses_sandbox and self.sandbox is None:
            refusal = f"{config.path}: an app now uses the sandbox, which was not mounted: restart"
        if refusal is not None:
            raise ConfigError(refusal)
        changed = [k for k in type(config.server).model_fields if getattr(config.server, k) != getattr(old.server, k)]
        changed = [k for k in changed if k not in APPLIED_ON_RELOAD]
        if changed:
            log.warning("config_reload_partial", restart_needed_for=[f"server.{k}" for k in changed])
        snapshot = self._build(config)  # steps are built here: a failing one keeps the old config
        self.current = snapshot
        for gone in set(old.apps) - set(config.apps):
            self.metrics.circuit(gone, False)  # its breaker is gone with it: no alert for an app not served
        self.proxies = TrustedProxies(config.server.trusted_proxies)
        self.deliverer.reconfigure(config.webhooks)
        self.metrics.config_loaded(config.digest)
        log.info("config_reloaded", digest=config.digest, previous=old.digest, path=config.path)
        self.hooks.notify("wxgate_config_reloaded", digest=config.digest, previous_digest=old.digest)

    async def start(self) -> None:
        await self.storage.start()
        self.metrics.storage_seen(True)
        self.deliverer.start()
        self.outbox_gauges.start()
        self.session_sweeper.start()
        self.hooks.notify(
            "wxgate_startup", config_digest=self.config.digest, apps=list(self.config.apps), pid=os.getpid()
        )

    async def close(self) -> None:
        await self.outbox_gauges.stop()
        await self.session_sweeper.stop()
        await self.deliverer.stop()
        self.hooks.notify("wxgate_shutdown", pid=os.getpid())
        await self.hooks.drain()
        await self.storage.close()
