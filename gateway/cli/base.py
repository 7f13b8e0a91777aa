"""What every command module shares: the error that ends a command, the exit codes, the parser helpers."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TypeAlias

from gateway.config import DEFAULT_CONFIG, Config
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


def require_shared_storage(config: Config) -> None:
    """The storage a command attaches to must be one the gateway shares: not ``memory``
    (it lives inside the gateway process), and with ``uri: embedded`` a data directory
    that exists: started elsewhere, the command would make an empty database and a new
    key there, and answer "nothing" about users it cannot see."""
    if config.storage_cls.name == "memory":
        raise CLIError("storage 'memory' lives inside the gateway process; use a shared storage", USAGE_ERROR)
    options = config.storage_options
    data_dir = getattr(options, "data_dir", None)
    if getattr(options, "uri", None) == "embedded" and data_dir and not Path(data_dir).is_dir():
        raise CLIError(
            f"nothing to attach to: the embedded storage's data directory {data_dir!r} does not exist here "
            f"({Path.cwd()}); run the command in the gateway's working directory, or set storage.options.data_dir",
            RUNTIME_FAILURE,
        )
