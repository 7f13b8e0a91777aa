"""Serving: bind, (optionally) fork workers, run the app until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import os
import shutil
import signal
import socket
from dataclasses import dataclass
from pathlib import Path

import structlog.contextvars
import tornado.httpclient
import tornado.netutil
import tornado.web

from gateway import event_loop
from gateway.admin_listener import make_admin_app
from gateway.app import make_app
from gateway.config import Config, load_config
from gateway.errors import ConfigError
from gateway.flow_request import wait_for_flows
from gateway.hooks import Hooks
from gateway.http_server import GatewayHTTPServer
from gateway.listeners import Listeners, reachable_hosts
from gateway.logs import get_logger
from gateway.metrics import enable_multiprocess, forget_process
from gateway.prefork import run_workers
from gateway.registry import PluginError
from gateway.runtime import Gateway, build_pipelines, reload_refusal
from gateway.storage import Storage

IDLE_CONNECTION_SECONDS = 75.0  # as nginx's keepalive_timeout: longer than a proxy's own
FLOW_GRACE_SECONDS = 10.0


class CannotListen(RuntimeError):
    """A listening address is taken or not ours: a runtime failure (exit 1), not a mistake
    in the file, since the same file serves once the address is free."""


def self_url_for(host: str, port: int) -> str:
    """How this gateway reaches itself (for the mounted sandbox)."""
    host = reachable_hosts(host)[0]
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}"


def serve(config: Config, host: str, port: int, processes: int = 1) -> int:
    if processes == 0:
        processes = os.cpu_count() or 1
    if processes > 1 and config.storage_cls.name == "memory":
        raise ConfigError(
            f"{config.path}: --processes {processes} needs a shared storage: with 'memory' each worker "
            "would keep its own sessions, and a token from one would be unknown to the others"
        )
    if processes > 1 and config.uses_sandbox:
        # Each worker would hold its own simulated WeChat: codes issued by one would be
        # unknown to another. One shared fake upstream keeps the test honest.
        raise ConfigError(
            f"{config.path}: --processes {processes} cannot serve apps with upstream: sandbox "
            "(each worker would simulate its own WeChat); run `wxgate sandbox` and set "
            "upstream: http://127.0.0.1:<its port> instead"
        )
    try:
        listeners = Listeners(port, host, processes)
    except OSError as exc:
        raise CannotListen(f"cannot listen on {host}:{port}: {exc.strerror} (is another server using it?)") from None
    bound_port = listeners.port
    admin_sockets = _bind_admin(config, listeners)
    hooks = Hooks()  # loaded (and checked) once, before any worker: a broken plugin stops here
    storage = config.storage_cls(config.storage_options)
    storage.before_fork()  # e.g. the embedded MongoDB, shared by all workers
    metrics_dir = enable_multiprocess() if processes > 1 else None  # before any worker creates its metrics
    pid_file = Path(config.server.pid_file) if config.server.pid_file else None
    running = RunningConfig(config)
    # every worker on the loop the gateway started with, also one started after a reload
    # changed the key (the reload logs restart_needed_for for it)
    loop_choice = config.server.event_loop

    def work(worker_id: int) -> None:
        structlog.contextvars.bind_contextvars(worker=worker_id, pid=os.getpid())
        sockets = Sockets(listeners.of(worker_id), admin_sockets)
        self_url = self_url_for(host, bound_port)
        event_loop.run(_run_worker(running.config, storage, hooks, sockets, self_url, worker_id), loop_choice)

    def prepare(worker_id: int) -> None:
        if running.config.server.watch_config:
            running.reread()  # what the other workers' watchers have loaded (or will within a second)
        listeners.prepare(worker_id)

    try:
        if processes > 1:
            # one clear failure here rather than workers dying in a loop (the cause is the same for all)
            build_pipelines(config)  # a step that fails to start: a configuration error, exit 2
            event_loop.run(_check_storage(config), loop_choice)  # on the workers' loop, as they will
        if pid_file is not None:
            pid_file.parent.mkdir(parents=True, exist_ok=True)
            # the config path too: `wxgate reload` checks it validates the file this gateway re-reads
            pid_file.write_text(f"{os.getpid()}\n{Path(config.path).resolve()}\n")
        if processes == 1:
            work(0)
            return 0
        return run_workers(
            processes, work, prepare=prepare, forked=listeners.forked, exited=forget_process, reread=running.reread
        )
    finally:
        listeners.close()
        for sock in admin_sockets:
            sock.close()
        if processes > 1:
            asyncio.run(storage.close())  # the parent owns what before_fork started
        if pid_file is not None:
            pid_file.unlink(missing_ok=True)
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


@dataclass(frozen=True)
class Sockets:
    public: list[socket.socket]
    admin: list[socket.socket]


class RunningConfig:
    """The supervisor's copy of the configuration its workers run: at SIGHUP it re-reads
    the file under the workers' own rules (:func:`gateway.runtime.reload_refusal`, every
    step started), so a worker started later loads what the others serve, and the running
    configuration when the file is now invalid."""

    def __init__(self, config: Config) -> None:
        self.config = config

    def reread(self) -> None:
        path = self.config.path
        try:
            config = load_config(path)
            refusal = reload_refusal(self.config, config)
            if refusal is not None:
                raise ConfigError(refusal)
            build_pipelines(config)
        except (ConfigError, PluginError) as exc:
            # the workers log the refusal (config_reload_refused); this says what replacements get
            get_logger("wxgate.prefork").warning(
                "supervisor_keeps_config", path=path, digest=self.config.digest, error=str(exc).splitlines()[0]
            )
            return
        self.config = config


def _bind_admin(config: Config, listeners: Listeners) -> list[socket.socket]:
    """The admin listener's socket, shared by every worker (a few requests a minute: the
    kernel's spreading over per-worker sockets buys nothing here)."""
    admin = config.server.admin
    if admin is None:
        return []
    try:
        return tornado.netutil.bind_sockets(admin.port, admin.host)
    except OSError as exc:
        listeners.close()
        raise CannotListen(
            f"{config.path}: server.admin: cannot listen on {admin.host}:{admin.port}: {exc.strerror} "
            "(is another server using it?)"
        ) from None


async def _check_storage(config: Config) -> None:
    """Raises StorageUnavailable (with the driver's cause) when the storage cannot be used.
    A storage object of its own: the workers' one is started in each worker, after the fork."""
    probe = config.storage_cls(config.storage_options)
    probe.before_fork()  # attaches to an embedded server already started, never starts one
    try:
        await probe.start()
        await probe.ping()
    finally:
        await probe.close()


def configure_http_client() -> None:
    """libcurl (pycurl) when installed: it keeps connections to WeChat alive, where
    Tornado's own client opens (and, for HTTPS, handshakes) one per call."""
    if importlib.util.find_spec("pycurl") is not None:
        tornado.httpclient.AsyncHTTPClient.configure("tornado.curl_httpclient.CurlAsyncHTTPClient", max_clients=256)
    else:
        tornado.httpclient.AsyncHTTPClient.configure(None, max_clients=256)


def reload_from_file(gateway: Gateway, path: str) -> bool:
    """Load, validate and swap; an invalid file is refused and the running config stays."""
    log = get_logger()
    try:
        gateway.reload(load_config(path))
    except (ConfigError, PluginError) as exc:
        gateway.metrics.reload_failed()
        log.error("config_reload_refused", path=path, error=str(exc), running=gateway.config.digest)
        return False
    return True


async def _watch(gateway: Gateway, path: str, interval: float = 1.0) -> None:
    """Opt-in (server.watch_config): reload when the file's content changes."""
    seen = _digest_of(path)
    while True:
        await asyncio.sleep(interval)
        current = _digest_of(path)
        if current is not None and current != seen:
            seen = current
            reload_from_file(gateway, path)


def _digest_of(path: str) -> str | None:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


async def _run_worker(
    config: Config, storage: Storage, hooks: Hooks, sockets: Sockets, self_url: str, worker_id: int = 0
) -> None:
    configure_http_client()
    gateway = Gateway(config, self_url, storage=storage, hooks=hooks, worker=worker_id)
    await gateway.start()
    servers = [_http_server(make_app(gateway), config, sockets.public)]
    if sockets.admin:
        servers.append(_http_server(make_admin_app(gateway), config, sockets.admin))
    log = get_logger()
    log.info(
        "gateway_started",
        url=self_url,
        config=config.path,
        digest=config.digest,
        apps=list(config.apps),
        event_loop=event_loop.running_loop_name(),
    )
    if sockets.admin:
        host, port = sockets.admin[0].getsockname()[:2]
        url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
        admin = config.server.admin
        # an operator who expects the console learns here why it answers 404
        console = (
            f"{url}/admin/" if admin is not None and admin.token.get_secret_value() else "off (no server.admin.token)"
        )
        log.info("admin_listening", url=url, console=console)
    if config.mixes_sandbox_and_real:
        sandbox_apps = [name for name, app in config.apps.items() if app.uses_sandbox]
        log.warning("sandbox_beside_real_apps", sandbox_apps=sandbox_apps, hint="serve the sandbox apps apart")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload_from_file, gateway, config.path)
    watcher = asyncio.create_task(_watch(gateway, config.path)) if config.server.watch_config else None
    await stop.wait()
    if watcher is not None:
        watcher.cancel()
    for server in servers:
        server.stop()
    for server in servers:
        await server.close_all_connections()
    await wait_for_flows(FLOW_GRACE_SECONDS)  # flows running in tasks of their own (chunked bodies)
    await gateway.close()
    log.info("gateway_stopped")


def _http_server(app: tornado.web.Application, config: Config, sockets: list[socket.socket]) -> GatewayHTTPServer:
    # Client addresses come from server.trusted_proxies (gateway.client_address), never
    # from Tornado's xheaders, which believe any peer.
    server = GatewayHTTPServer(
        app,
        header_timeout=config.server.header_timeout,
        # a kept-alive connection with no request for this long is closed (Tornado's default is an hour)
        idle_timeout=IDLE_CONNECTION_SECONDS,
    )
    server.add_sockets(sockets)
    return server
