"""The ``wxgate`` command (also ``python run.py``), one module per command group:

- ``serve`` (:mod:`.serve`): run the gateway; the command assumed when none is named.
- ``validate``, ``pipelines``, ``dry-run`` (:mod:`.config_commands`): check a configuration, show its
  resolved flows, run one flow against the sandbox (:mod:`.dry_run` does the running).
- ``reload`` (:mod:`.reload`): validate a configuration, then signal the running gateway.
- ``version`` (:mod:`.version`): wxgate's version and every installed plugin's.
- ``decrypt``, ``encrypt`` (:mod:`.crypto`): WeChat's open-data cipher by hand.
- ``sandbox`` (:mod:`.sandbox`): only the fake WeChat upstream.
- ``events list|retry|purge`` (:mod:`.events`): the webhook outbox of a shared storage.
- ``sessions list|revoke`` (:mod:`.sessions`): a user's login sessions in a shared storage; revoke one or all.

A command returns its exit code, or raises :class:`CLIError`; :func:`main` prints the message on
stderr and exits with its code. Exit codes: 0 done, 1 runtime failure, 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import pluggy

from gateway import __version__
from gateway.cli.base import RUNTIME_FAILURE, USAGE_ERROR, CLIError, describe
from gateway.cli.config_commands import add_dry_run, add_pipelines, add_validate
from gateway.cli.crypto import add_decrypt, add_encrypt
from gateway.cli.events import add_events
from gateway.cli.reload import add_reload
from gateway.cli.sandbox import add_sandbox
from gateway.cli.serve import add_serve
from gateway.cli.sessions import add_sessions
from gateway.cli.version import add_version
from gateway.errors import ConfigError, GatewayError
from gateway.registry import PluginError

__all__ = ["CLIError", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version")):
        argv = ["serve", *argv]  # `python run.py [--port N]` serves the embedded default
    args = _parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except CLIError as exc:
        return _fail(f"{args.prog}: {exc.message}", exc.exit_code)
    except (ConfigError, PluginError, pluggy.PluginValidationError) as exc:
        return _fail(f"wxgate: configuration error:\n{exc}", USAGE_ERROR)
    except GatewayError as exc:  # e.g. storage unreachable at start
        return _fail(f"wxgate: {describe(exc)}", RUNTIME_FAILURE)
    except KeyboardInterrupt:
        return 130
    return code


def _fail(message: str, exit_code: int) -> int:
    print(message, file=sys.stderr)
    return exit_code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wxgate", description="Gateway for WeChat mini-program back ends.")
    parser.add_argument("--version", action="version", version=f"wxgate {__version__}")
    sub = parser.add_subparsers(dest="command")
    # in the order `wxgate --help` lists them
    for add in (
        add_serve,
        add_validate,
        add_decrypt,
        add_encrypt,
        add_events,
        add_sessions,
        add_pipelines,
        add_dry_run,
        add_reload,
        add_version,
        add_sandbox,
    ):
        add(sub)
    return parser
