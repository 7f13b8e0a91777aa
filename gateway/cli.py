"""The ``wxgate`` command (also ``python run.py``): serve, validate, decrypt, encrypt, sandbox."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Sequence

import tornado.httpclient
import tornado.netutil
from tornado.httpserver import HTTPServer

from gateway import __version__
from gateway.config import DEFAULT_CONFIG, load_config
from gateway.errors import ConfigError
from gateway.logs import configure_logging, get_logger
from gateway.registry import PluginError
from gateway.sandbox import SandboxApp, SandboxWorld, make_sandbox_app
from gateway.server import serve
from gateway.wechat import crypto


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version")):
        argv = ["serve", *argv]  # `python run.py [--port N]` serves the embedded default
    args = _parser().parse_args(argv)
    try:
        result: int = args.func(args)
        return result
    except (ConfigError, PluginError) as exc:
        print(f"wxgate: configuration error:\n{exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wxgate", description="Gateway for WeChat mini-program back ends.")
    parser.add_argument("--version", action="version", version=f"wxgate {__version__}")
    sub = parser.add_subparsers(dest="command")

    serve = sub.add_parser("serve", help="run the gateway (the default command)")
    serve.add_argument("--config", default=str(DEFAULT_CONFIG), help="YAML file (default: %(default)s)")
    serve.add_argument("--host", help="listen address (overrides server.host)")
    serve.add_argument("--port", type=int, help="listen port (overrides server.port; 0 picks a free one)")
    serve.add_argument(
        "--processes", type=int, default=1, help="worker processes sharing the port (0: one per CPU; default 1)"
    )
    serve.set_defaults(func=_serve)

    validate = sub.add_parser("validate", help="check a configuration file; exit 0 when valid")
    validate.add_argument("config", help="YAML file")
    validate.set_defaults(func=_validate)

    decrypt = sub.add_parser("decrypt", help="decrypt open data and print the JSON object")
    decrypt.add_argument("--appid", required=True, help="your appid: the watermark must match it")
    decrypt.add_argument("--session-key", required=True, help="the user's session_key (base64)")
    decrypt.add_argument("--iv", required=True, help="iv (base64)")
    decrypt.add_argument("--data", required=True, help="encryptedData (base64)")
    decrypt.set_defaults(func=_decrypt)

    encrypt = sub.add_parser("encrypt", help="encrypt a JSON object as WeChat does (test vectors)")
    encrypt.add_argument("--session-key", required=True, help="session_key (base64)")
    encrypt.add_argument("--json", required=True, help="the plaintext JSON object")
    encrypt.set_defaults(func=_encrypt)

    sandbox = sub.add_parser("sandbox", help="run only the fake WeChat upstream")
    sandbox.add_argument("--config", default=str(DEFAULT_CONFIG), help="apps to simulate (default: %(default)s)")
    sandbox.add_argument("--host", default="127.0.0.1")
    sandbox.add_argument("--port", type=int, default=8081)
    sandbox.set_defaults(func=_sandbox)
    return parser


def _serve(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    configure_logging(config.server.log_format)
    host = args.host or config.server.host
    port = config.server.port if args.port is None else args.port
    return serve(config, host, port, args.processes)


def _validate(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    flows = sum(len(f) for f in config.flows.values())
    print(f"{args.config}: valid ({len(config.apps)} apps, {flows} flows, digest {config.digest})")
    return 0


def _decrypt(args: argparse.Namespace) -> int:
    try:
        payload = crypto.decrypt_json(args.session_key, crypto.repair_base64(args.iv), crypto.repair_base64(args.data))
    except crypto.MalformedInput as exc:
        print(f"wxgate decrypt: {exc}", file=sys.stderr)
        return 1
    except crypto.DecryptionFailed:
        print("wxgate decrypt: decryption failed (wrong session key, iv or data)", file=sys.stderr)
        return 1
    mark = payload.get("watermark")
    appid = mark.get("appid") if isinstance(mark, dict) else None
    if appid != args.appid:
        print(f"wxgate decrypt: watermark appid {appid!r} is not {args.appid!r}", file=sys.stderr)
        return 1
    print(json.dumps(payload, ensure_ascii=False, indent=2))
    return 0


def _encrypt(args: argparse.Namespace) -> int:
    try:
        payload = json.loads(args.json)
        if not isinstance(payload, dict):
            raise ValueError("not an object")
        data, iv = crypto.encrypt_json(args.session_key, payload)
    except (ValueError, crypto.MalformedInput) as exc:
        print(f"wxgate encrypt: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"encryptedData": data, "iv": iv}))
    return 0


def _sandbox(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    configure_logging(config.server.log_format)
    world = SandboxWorld(apps=[SandboxApp(a.name, a.appid, a.secret.get_secret_value()) for a in config.apps.values()])

    async def run() -> None:
        server = HTTPServer(make_sandbox_app(world))
        sockets = tornado.netutil.bind_sockets(args.port, args.host)
        server.add_sockets(sockets)
        port = sockets[0].getsockname()[1]
        get_logger().info("sandbox_started", url=f"http://{args.host}:{port}", apps=[a.name for a in world.apps])
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        server.stop()

    asyncio.run(run())
    return 0
