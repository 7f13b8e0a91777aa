"""``wxgate reload``: validate a configuration, then signal the running gateway to load it."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from gateway.cli.base import RUNTIME_FAILURE, USAGE_ERROR, CLIError, Subcommands, add_command, load_for
from gateway.config import Config, UnsetVariable


def add_reload(sub: Subcommands) -> None:
    parser = add_command(
        sub, "reload", _reload, help="validate a configuration, then tell the running gateway to load it"
    )
    parser.add_argument("--pid", type=int, help="the gateway's pid (default: read server.pid_file)")


def _reload(args: argparse.Namespace) -> int:
    try:
        config = load_for(args)  # refuse here, with file:line, before bothering the gateway
        checked = "valid"
    except UnsetVariable as exc:
        # The gateway's variables (app secrets, say) live in its environment file, not always in
        # this shell's: check what can be checked here, and leave the rest to the gateway, which
        # keeps its running configuration when the file turns out invalid (config_reload_refused).
        config = load_for(args, sections=("server",))
        checked = "server section valid"
        print(f"{args.prog}: not checked here, the gateway will: {exc}", file=sys.stderr)
    pid = args.pid if args.pid is not None else _running_pid(config, args.config)
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError as exc:
        raise CLIError(f"no process {pid} (is the gateway running?)", RUNTIME_FAILURE) from exc
    except PermissionError as exc:
        raise CLIError(f"not allowed to signal process {pid}: run as the gateway's user", RUNTIME_FAILURE) from exc
    print(f"{args.config}: {checked} (digest {config.digest}); reload signal sent to {pid}")
    return 0


def _running_pid(config: Config, path: str) -> int:
    """The pid in ``server.pid_file``, once sure that gateway re-reads ``path``: SIGHUP makes it
    load its own file again, so a signal after editing another file would change nothing."""
    if not config.server.pid_file:
        raise CLIError(
            f"{path} has no server.pid_file, so the gateway's pid is unknown: give --pid, or set server.pid_file "
            "in that file (and restart the gateway, which writes it)",
            USAGE_ERROR,
        )
    try:
        lines = Path(config.server.pid_file).read_text().splitlines()
        pid = int(lines[0])
    except (OSError, ValueError, IndexError) as exc:
        # the gateway removes its pid file when it stops: most often, nothing runs to reload
        raise CLIError(f"cannot read {config.server.pid_file}: {exc}", RUNTIME_FAILURE) from exc
    running = lines[1] if len(lines) > 1 else ""
    if running and running != str(Path(path).resolve()):
        raise CLIError(f"the gateway re-reads {running}, not {path}; edit that file and reload", USAGE_ERROR)
    return pid
