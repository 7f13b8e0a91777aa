"""``wxgate sandbox``: serve only the fake WeChat upstream, for gateways and load tools to point at."""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket

import tornado.netutil
from tornado.httpserver import HTTPServer

from gateway.cli.base import RUNTIME_FAILURE, CLIError, Subcommands, add_command, add_config_option, load_for
from gateway.config import is_loopback
from gateway.errors import ConfigError
from gateway.logs import configure_logging, get_logger
from gateway.sandbox import SandboxApp, SandboxWorld, make_sandbox_app
from gateway.storage import Storage

SANDBOX_PORT = 8090


def add_sandbox(sub: Subcommands) -> None:
    parser = add_command(sub, "sandbox", _sandbox, help="run only the fake WeChat upstream")
    add_config_option(parser, "apps to simulate")
    parser.add_argument("--host", default="127.0.0.1")
    # not 8081, the admin listener's port in the docs' examples: both run on one host in staging
    parser.add_argument("--port", type=int, default=SANDBOX_PORT, help="default: %(default)s")
    parser.add_argument(
        "--reusable-codes", action="store_true", help="benchmarks only: codes may be redeemed more than once"
    )


def _sandbox(args: argparse.Namespace) -> int:
    config = load_for(args)  # the apps' secrets included: it signs as WeChat would
    configure_logging(config.server.log_format)
    if not config.sandbox.public and not is_loopback(args.host):
        # every app of this server is simulated, with no authentication
        raise ConfigError(
            f"{config.path}: the sandbox has no authentication and {args.host!r} is not a loopback address; "
            "use --host 127.0.0.1, or set `sandbox: {public: true}` for a demo that others must reach"
        )
    try:  # before the storage starts: a port in use is the commonest failure
        sockets = tornado.netutil.bind_sockets(args.port, args.host)
    except OSError as exc:
        raise CLIError(
            f"cannot listen on {args.host}:{args.port}: {exc.strerror} (is another server using it? "
            "choose another with --port)",
            RUNTIME_FAILURE,
        ) from None
    # The simulated users and tokens are kept in the configured storage, as the gateway's
    # mounted sandbox keeps them, so that they survive a restart as they would with WeChat.
    storage = config.storage_cls(config.storage_options)
    storage.before_fork()
    world = SandboxWorld(
        apps=[SandboxApp(a.name, a.appid, a.secret.get_secret_value()) for a in config.apps.values()],
        reusable_codes=args.reusable_codes,
        max_users=config.sandbox.max_users,
        storage=storage,
    )
    asyncio.run(_serve_until_stopped(world, storage, args.host, sockets))
    return 0


async def _serve_until_stopped(world: SandboxWorld, storage: Storage, host: str, sockets: list[socket.socket]) -> None:
    await storage.start()
    try:
        await _serve(world, host, sockets)
    finally:
        await storage.close()


async def _serve(world: SandboxWorld, host: str, sockets: list[socket.socket]) -> None:
    server = HTTPServer(make_sandbox_app(world))
    server.add_sockets(sockets)
    bound = sockets[0].getsockname()[1]
    get_logger().info("sandbox_started", url=f"http://{host}:{bound}", apps=[a.name for a in world.apps])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.stop()
