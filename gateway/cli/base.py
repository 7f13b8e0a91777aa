"""What every command module shares: the error that ends a command, the exit codes, the parser helpers."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeAlias

from gateway.config import DEFAULT_CONFIG
from gateway.errors import GatewayError

# The contract's exit codes (0 is done).
RUNTIME_FAILURE = 1  # e.g. storage unreachable, nothing to attach to
USAGE_ERROR = 2  # bad arguments or configuration

Command = Callable[[argparse.Namespace], int]
# argparse has no public name for what add_subparsers returns
Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


class CLIError(Exception):
    """Ends a command: :func:`gateway.cli.main` prints the message on stderr after the command's name and exits."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def add_command(sub: Subcommands, name: str, func: Command, *, help: str) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help)
    # the parser's prog ("wxgate events retry") is how main names the command in an error
    parser.set_defaults(func=func, prog=parser.prog)
    return parser


def add_config_option(parser: argparse.ArgumentParser, what: str = "YAML file") -> None:
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help=f"{what} (default: %(default)s)")


def describe(exc: GatewayError) -> str:
    return f"{exc.client_message} ({exc.log_detail or exc.code})"
