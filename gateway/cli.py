"""The ``wxgate`` command (also ``python run.py``): serve, validate, decrypt, encrypt, sandbox."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pluggy
import tornado.httpclient
import tornado.netutil
from tornado.httpserver import HTTPServer

from gateway import __version__
from gateway.config import DEFAULT_CONFIG, FLOWS, load_config
from gateway.errors import ConfigError, GatewayError
from gateway.hooks import Hooks
from gateway.logs import configure_logging, get_logger
from gateway.pipeline import Pipeline
from gateway.registry import PluginError, Registry
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
    except (ConfigError, PluginError, pluggy.PluginValidationError) as exc:
        print(f"wxgate: configuration error:\n{exc}", file=sys.stderr)
        return 2
    except GatewayError as exc:  # e.g. storage unreachable at start
        print(f"wxgate: {exc.client_message} ({exc.log_detail or exc.code})", file=sys.stderr)
        return 1
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
        "--processes", type=_count, default=1, help="worker processes sharing the port (0: one per CPU; default 1)"
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

    events = sub.add_parser("events", help="inspect and repair the webhook outbox")
    events.add_argument("--config", default=str(DEFAULT_CONFIG), help="YAML file (default: %(default)s)")
    actions = events.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="list events, newest last")
    listing.add_argument("--status", choices=EVENT_STATUSES, help="only events in this state")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    retry = actions.add_parser("retry", help="put dead-lettered events back in the queue")
    retry.add_argument("ids", nargs="*", help="event ids as listed (default: none; see --all)")
    retry.add_argument("--all", action="store_true", help="every dead-lettered event")
    purge = actions.add_parser("purge", help="delete delivered or dead events older than a given age")
    purge.add_argument("--status", choices=("delivered", "dead"), required=True)
    purge.add_argument("--older-than", required=True, help="age such as 30s, 15m, 12h or 7d")
    events.set_defaults(func=_events)

    pipelines = sub.add_parser("pipelines", help="show each app's resolved flows with step options (secrets masked)")
    pipelines.add_argument("config", help="YAML file")
    pipelines.add_argument("--app", help="only this app")
    pipelines.add_argument("--json", action="store_true", help="as JSON")
    pipelines.set_defaults(func=_pipelines)

    dry = sub.add_parser("dry-run", help="run one flow against the sandbox and show each step")
    dry.add_argument("config", help="YAML file")
    dry.add_argument("--app", required=True)
    dry.add_argument("--flow", required=True, choices=FLOWS)
    dry.add_argument("--user", default="dry-run-user", help="the simulated WeChat user (default: %(default)s)")
    dry.add_argument("--input", default="{}", help="JSON object of request fields that override the simulated ones")
    dry.set_defaults(func=_dry_run)

    reload = sub.add_parser("reload", help="validate a configuration, then tell the running gateway to load it")
    reload.add_argument("--config", default=str(DEFAULT_CONFIG), help="YAML file (default: %(default)s)")
    reload.add_argument("--pid", type=int, help="the gateway's pid (default: read server.pid_file)")
    reload.set_defaults(func=_reload)

    version = sub.add_parser("version", help="print the version of wxgate and of every plugin")
    version.set_defaults(func=_version)

    sandbox = sub.add_parser("sandbox", help="run only the fake WeChat upstream")
    sandbox.add_argument("--config", default=str(DEFAULT_CONFIG), help="apps to simulate (default: %(default)s)")
    sandbox.add_argument("--host", default="127.0.0.1")
    sandbox.add_argument("--port", type=int, default=8081)
    sandbox.add_argument(
        "--reusable-codes", action="store_true", help="benchmarks only: codes may be redeemed more than once"
    )
    sandbox.set_defaults(func=_sandbox)
    return parser


def _serve(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    configure_logging(config.server.log_format)
    host = args.host or config.server.host
    port = config.server.port if args.port is None else args.port
    return serve(config, host, port, args.processes)


EVENT_STATUSES = ("pending", "delivering", "delivered", "dead")


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 (one per CPU) or more")
    return value


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _age_seconds(text: str) -> float:
    if len(text) < 2 or text[-1] not in _UNITS or not text[:-1].isdigit():
        raise ValueError(f"--older-than {text!r}: expected a number and a unit, such as 30s, 15m, 12h or 7d")
    return int(text[:-1]) * _UNITS[text[-1]]


def _events(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if config.storage_cls.name == "memory":
        print("wxgate events: storage 'memory' lives inside the gateway process; use a shared storage", file=sys.stderr)
        return 2
    if args.action == "retry" and not args.ids and not args.all:
        print("wxgate events retry: name event ids, or --all", file=sys.stderr)
        return 2
    try:
        older_than = time.time() - _age_seconds(args.older_than) if args.action == "purge" else 0.0
    except ValueError as exc:
        print(f"wxgate events: {exc}", file=sys.stderr)
        return 2
    storage = config.storage_cls(config.storage_options)

    async def run() -> int:
        await storage.start()
        try:
            if args.action == "list":
                for event in await storage.list_events(args.status, args.limit):
                    row = {
                        "id": event.id,
                        "type": event.type,
                        "endpoint": event.endpoint,
                        "status": event.status,
                        "attempts": event.attempts,
                        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(event.created_at)),
                        "last_error": event.last_error,
                    }
                    print(json.dumps(row) if args.json else "  ".join(str(v) for v in row.values()))
            elif args.action == "retry":
                count = await storage.requeue_events(None if args.all else list(args.ids), time.time())
                print(f"{count} dead-lettered events queued again")
            else:
                count = await storage.purge_events(args.status, older_than)
                print(f"{count} {args.status} events purged")
        finally:
            await storage.close()
        return 0

    try:
        return asyncio.run(run())
    except GatewayError as exc:
        print(f"wxgate events: {exc.client_message} ({exc.log_detail or exc.code})", file=sys.stderr)
        return 1


def _pipelines(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    apps = [args.app] if args.app else list(config.apps)
    out: dict[str, Any] = {}
    for name in apps:
        if name not in config.apps:
            print(f"wxgate pipelines: no app {name!r} in {args.config}", file=sys.stderr)
            return 2
        app = config.apps[name]
        out[name] = {
            "appid": app.appid,
            "secret": "***",
            "upstream": app.upstream,
            "flows": {
                flow: [{step.name: step.options.model_dump(mode="json")} for step in steps]
                for flow, steps in config.flows[name].items()
            },
        }
    if args.json:
        print(json.dumps(out, indent=2, ensure_ascii=False))
        return 0
    for name, app_info in out.items():
        print(f"{name}  appid={app_info['appid']}  upstream={app_info['upstream']}")
        for flow, steps in app_info["flows"].items():
            print(f"  {flow}:")
            for step in steps:
                ((step_name, options),) = step.items()
                shown = ", ".join(f"{k}={v!r}" for k, v in options.items())
                print(f"    - {step_name}" + (f"  ({shown})" if shown else ""))
    return 0


def _dry_run(args: argparse.Namespace) -> int:
    from gateway.dry_run import run_dry

    config = load_config(args.config)
    configure_logging("console", level=logging.WARNING)  # the result is the output
    try:
        extra = json.loads(args.input)
        if not isinstance(extra, dict):
            raise ValueError("not an object")
    except ValueError as exc:
        print(f"wxgate dry-run: --input must be a JSON object ({exc})", file=sys.stderr)
        return 2
    result = run_dry(config, args.app, args.flow, args.user, extra)
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0 if 200 <= int(result["status"]) < 300 else 1


def _reload(args: argparse.Namespace) -> int:
    config = load_config(args.config)  # refuse here, with file:line, before bothering the gateway
    pid = args.pid
    if pid is None:
        if not config.server.pid_file:
            print("wxgate reload: give --pid, or set server.pid_file in the configuration", file=sys.stderr)
            return 2
        try:
            lines = Path(config.server.pid_file).read_text().splitlines()
            pid = int(lines[0])
        except (OSError, ValueError, IndexError) as exc:
            print(f"wxgate reload: cannot read {config.server.pid_file}: {exc}", file=sys.stderr)
            return 2
        running = lines[1] if len(lines) > 1 else ""
        if running and running != str(Path(args.config).resolve()):
            print(
                f"wxgate reload: the gateway re-reads {running}, not {args.config}; edit that file and reload",
                file=sys.stderr,
            )
            return 2
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        print(f"wxgate reload: no process {pid} (is the gateway running?)", file=sys.stderr)
        return 1
    print(f"{args.config}: valid (digest {config.digest}); reload signal sent to {pid}")
    return 0


def _version(args: argparse.Namespace) -> int:
    registry = Registry.discover()
    print(f"wxgate {__version__}")
    plugins: list[tuple[str, str, str]] = [("step", n, c.version) for n, c in registry.steps.items()]
    plugins += [("storage", n, c.version) for n, c in registry.storages.items()]
    for kind, name, plugin_version in sorted(plugins):
        print(f"  {kind} {name} {plugin_version} ({registry.origins[f'{kind} {name!r}']})")
    for name, _plugin in Hooks().pm.list_name_plugin():
        print(f"  hooks {name}")
    return 0


def _validate(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    for app_flows in config.flows.values():  # steps are built too: one failing to start is an error
        for flow, steps in app_flows.items():
            Pipeline.build(flow, steps)
    Hooks()  # and the installed hook plugins are loaded and checked
    count = sum(len(f) for f in config.flows.values())
    print(f"{args.config}: valid ({len(config.apps)} apps, {count} flows, digest {config.digest})")
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
    world = SandboxWorld(
        apps=[SandboxApp(a.name, a.appid, a.secret.get_secret_value()) for a in config.apps.values()],
        reusable_codes=args.reusable_codes,
    )

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
