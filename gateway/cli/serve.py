"""``wxgate serve``: run the gateway (the command ``main`` assumes when none is named)."""

from __future__ import annotations

import argparse

from gateway.cli.base import RUNTIME_FAILURE, CLIError, Subcommands, add_command, add_config_option
from gateway.config import load_config
from gateway.errors import ConfigError
from gateway.logs import configure_logging
from gateway.prefork import WorkersFailing
from gateway.server import serve


def add_serve(sub: Subcommands) -> None:
    parser = add_command(sub, "serve", _serve, help="run the gateway (the default command)")
    add_config_option(parser)
    parser.add_argument("--host", help="listen address (overrides server.host)")
    parser.add_argument("--port", type=int, help="listen port (overrides server.port; 0 picks a free one)")
    parser.add_argument(
        "--processes", type=_count, default=1, help="worker processes sharing the port (0: one per CPU; default 1)"
    )


def _serve(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    configure_logging(config.server.log_format)
    host = args.host or config.server.host
    port = config.server.port if args.port is None else args.port
    refusal = config.sandbox_bind_refusal(args.host)  # only now is the address known (None: the file's)
    if refusal is not None:
        raise ConfigError(refusal)
    try:
        return serve(config, host, port, args.processes)
    except WorkersFailing as exc:
        raise CLIError(f"workers kept failing at start, stopped: {exc}", RUNTIME_FAILURE) from None


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 (one per CPU) or more")
    return value
