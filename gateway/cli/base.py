"""What every command module shares: the error that ends a command, the exit codes, the parser
helpers, and where a command's configuration file and environment come from."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Collection
from pathlib import Path
from typing import TypeAlias

from gateway.config import DEFAULT_CONFIG, Config, load_config
from gateway.errors import GatewayError

# The contract's exit codes (0 is done).
RUNTIME_FAILURE = 1  # e.g. storage unreachable, nothing to attach to
USAGE_ERROR = 2  # bad arguments or configuration

# Looked for in the working directory, in this order, when neither --config nor WXGATE_CONFIG names a file.
LOCAL_CONFIGS = ("wxgate.yaml", "config/gateway.yaml")

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
    add_file_options(parser)
    return parser


def add_file_options(parser: argparse.ArgumentParser) -> None:
    """``--config`` and ``--env-file`` after a command too. SUPPRESS: when not given here, the value
    given before the command (or none) stays."""
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="configuration file (default: $WXGATE_CONFIG, ./wxgate.yaml, ./config/gateway.yaml, the bundled one)",
    )
    parser.add_argument(
        "--env-file",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="dotenv file of variables for the configuration's ${VAR}s",
    )


def add_config_option(parser: argparse.ArgumentParser, what: str = "YAML file") -> None:
    """Kept for the command modules that call it: :func:`add_command` already gave the parser
    ``--config``; ``what`` only says what the file is for."""
    for action in parser._actions:
        if what != "YAML file" and action.dest == "config" and action.option_strings:
            action.help = f"{what}: {action.help}"


def config_path(args: argparse.Namespace) -> str:
    """The file a command reads: --config, then $WXGATE_CONFIG, then ./wxgate.yaml, ./config/gateway.yaml
    and the default bundled with wxgate."""
    given: str | None = getattr(args, "config", None) or os.environ.get("WXGATE_CONFIG") or None
    if given:
        return given
    for name in LOCAL_CONFIGS:
        if Path(name).is_file():
            return str(Path(name).resolve())
    return str(DEFAULT_CONFIG)


def load_for(
    args: argparse.Namespace, sections: Collection[str] | None = None, unread: Collection[tuple[str, ...]] = ()
) -> Config:
    """The command's configuration; ``sections``: only those it uses, ``unread``: keys in them it
    does not read (see :func:`gateway.config.parse_config`)."""
    return load_config(config_path(args), sections=sections, unread=unread)


def describe(exc: GatewayError) -> str:
    return f"{exc.client_message} ({exc.log_detail or exc.code})"


def require_shared_storage(config: Config) -> None:
    """The storage a command attaches to must be one the gateway shares: not ``memory``
    (it lives inside the gateway process), and with ``uri: embedded`` a data directory
    that exists: started elsewhere, the command would make an empty database and a new
    key there, and answer "nothing" about users it cannot see."""
    if config.storage_cls.name == "memory":
        raise CLIError(
            f"{config.path}: storage 'memory' lives inside the gateway process; use a shared storage", USAGE_ERROR
        )
    options = config.storage_options
    data_dir = getattr(options, "data_dir", None)
    if getattr(options, "uri", None) == "embedded" and data_dir and not Path(data_dir).is_dir():
        if Path(data_dir).is_absolute():
            where = f"{data_dir!r}, which does not exist (has the gateway run with this file?)"
        else:
            # the file was found; a relative data_dir is the gateway's working directory's
            where = (
                f"{data_dir!r}, relative to the directory the gateway runs in, and there is no {data_dir!r} here "
                f"({Path.cwd()}): run the command in the gateway's working directory, or make "
                "storage.options.data_dir absolute"
            )
        raise CLIError(f"nothing to attach to: {config.path} keeps its embedded storage in {where}", RUNTIME_FAILURE)
