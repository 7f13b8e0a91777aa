"""Serving: bind, (optionally) fork workers, run the app until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import os
import shutil
import signal
import socket
from pathlib import Path

import structlog.contextvars
import tornado.httpclient
from tornado.httpserver import HTTPServer

from gateway.app import make_app
from gateway.config import Config, load_config
from gateway.errors import ConfigError
from gateway.flow_request import wait_for_flows
from gateway.hooks import Hooks
from gateway.listeners import Listeners, reachable_hosts
from gateway.logs import get_logger
from gateway.metrics import enable_multiprocess
from gateway.prefork import run_workers
from gateway.registry import PluginError
from gateway.runtime import Gateway
from gateway.storage import Storage

IDLE_CONNECTION_SECONDS = 75.0  # as nginx's keepalive_timeout: longer than a proxy's own
FLOW_GRACE_SECONDS = 10.0


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
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror} (is another server using it?)") from None
    bound_port = listeners.port
    hooks = Hooks()  # loaded (and checked) once, before any worker: a broken plugin stops here
    storage = config.storage_cls(config.storage_options)
    storage.before_fork()  # e.g. the embedded MongoDB, shared by all workers
    metrics_dir = enable_multiprocess() if processes > 1 else None  # before any worker creates its metrics
    pid_file = Path(config.server.pid_file) if config.server.pid_file else None
    if pid_file is not None:
        pid_file.parent.mkdir(parents=True, exist_ok=True)
        # the config path too: `wxgate reload` checks it validates the file this gateway re-reads
        pid_file.write_text(f"{os.getpid()}\n{Path(config.path).resolve()}\n")

    def work(worker_id: int) -> None:
        structlog.contextvars.bind_contextvars(worker=worker_id, pid=os.getpid())
        asyncio.run(_run_worker(config, storage, hooks, listeners.of(worker_id), self_url_for(host, bound_port)))

    try:
        if processes == 1:
            work(0)
            return 0
        return run_workers(processes, work, prepare=listeners.prepare, forked=listeners.forked)
    finally:
        listeners.close()
        if processes > 1:
            asyncio.run(storage.close())  # the parent owns what before_fork started
        if pid_file is not None:
            pid_file.unlink(missing_ok=True)
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


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
    config: Config, storage: Storage, hooks: Hooks, sockets: list[socket.socket], self_url: str
) -> None:
    configure_http_client()
    gateway = Gateway(config, self_url, storage=storage, hooks=hooks)
    await gateway.start()
    # X-Forwarded-For / X-Real-Ip are believed only behind a proxy that sets them.
    server = HTTPServer(
        make_app(gateway),
        xheaders=config.server.trust_proxy_headers,
        # a connection with no request for this long is closed (Tornado's default is an hour)
        idle_connection_timeout=IDLE_CONNECTION_SECONDS,
    )
    server.add_sockets(sockets)
    log = get_logger()
    log.info("gateway_started", url=self_url, config=config.path, digest=config.digest, apps=list(config.apps))
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
    server.stop()
    await server.close_all_connections()
    await wait_for_flows(FLOW_GRACE_SECONDS)  # flows running in tasks of their own (chunked bodies)
    await gateway.close()
    log.info("gateway_stopped")
