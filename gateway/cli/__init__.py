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
- ``init [DIR]`` (:mod:`.init`): write a commented starter ``wxgate.yaml``.

The grammar: ``wxgate [--config FILE] [--env-file FILE] COMMAND [args]``; both options are also taken
after the command, and ``serve`` is assumed when no command is named. Where the file comes from:
:func:`.base.config_path`.

A command returns its exit code, or raises :class:`CLIError`; :func:`main` prints the message on
stderr and exits with its code. Exit codes: 0 done, 1 runtime failure, 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import dotenv
import dotenv.parser
import pluggy

from gateway import __version__
from gateway.cli.base import RUNTIME_FAILURE, USAGE_ERROR, CLIError, config_path, describe
from gateway.cli.config_commands import add_dry_run, add_pipelines, add_validate
from gateway.cli.crypto import add_decrypt, add_encrypt
from gateway.cli.events import add_events
from gateway.cli.init import add_init
from gateway.cli.new_plugin import add_new_plugin
from gateway.cli.reload import add_reload
from gateway.cli.sandbox import add_sandbox
from gateway.cli.serve import add_serve
from gateway.cli.sessions import add_sessions
from gateway.cli.version import add_version
from gateway.errors import ConfigError, GatewayError
from gateway.registry import PluginError
from gateway.server import CannotListen

__all__ = ["CLIError", "main"]


# Options that take a value, before or without a command (serve's included, for `wxgate --port 8765`):
# the word after one of them is not a command.
_VALUED = ("--config", "--env-file", "--host", "--port", "--processes")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if _command_index(argv) is None and not {"-h", "--help", "--version"} & set(argv):
        argv = ["serve", *argv]  # `wxgate`, `python run.py --port 8765`: serve
    args = _parser().parse_args(argv)
    from_environment = False
    try:
        if getattr(args, "env_file", None):
            _load_env_file(args.env_file)
        from_environment = not getattr(args, "config", None) and bool(os.environ.get("WXGATE_CONFIG"))
        args.config = config_path(args)  # after the env file, which may set WXGATE_CONFIG
        code: int = args.func(args)
        sys.stdout.flush()  # here, so that a closed pipe is met inside the try
    except BrokenPipeError:
        # `wxgate version | head`: the reader has what it wanted; no traceback, and none at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except CLIError as exc:
        return _fail(f"{args.prog}: {exc.message}", exc.exit_code)
    except (ConfigError, PluginError, pluggy.PluginValidationError) as exc:
        if from_environment and not Path(args.config).is_file():
            # the operator typed no path: say where this one came from
            exc = ConfigError(f"{exc}\n(the path is WXGATE_CONFIG's: point it at the gateway's file, or unset it)")
        return _fail(f"wxgate: configuration error:\n{exc}", USAGE_ERROR)
    except CannotListen as exc:
        return _fail(f"wxgate: {exc}", RUNTIME_FAILURE)
    except GatewayError as exc:  # e.g. storage unreachable at start
        return _fail(f"wxgate: {describe(exc)}", RUNTIME_FAILURE)
    except KeyboardInterrupt:
        return 130
    return code


def _command_index(argv: Sequence[str]) -> int | None:
    """Where the command's name is in ``argv``, or None when none is named."""
    skip = False
    for i, word in enumerate(argv):
        if skip:
            skip = False
        elif word in _VALUED:
            skip = True
        elif not word.startswith("-"):
            return i
    return None


def _load_env_file(path: str) -> None:
    """Variables for the configuration's ``${VAR}``s, in dotenv format. The process's own
    environment wins over the file, as a shell's ``VAR=x wxgate ...`` would expect."""
    if not Path(path).is_file():
        raise CLIError(f"--env-file {path}: no such file", USAGE_ERROR)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CLIError(f"--env-file {path}: cannot read it: {exc}", USAGE_ERROR) from exc
    # python-dotenv skips a line it cannot parse with a warning naming neither file nor
    # variable: the command would then run without it. The line is not shown: it may hold a secret.
    for binding in dotenv.parser.parse_stream(io.StringIO(text)):
        if binding.error:
            raise CLIError(
                f"--env-file {path}:{binding.original.line}: not a NAME=value line (a value with spaces or "
                "quotes needs quoting as in a shell: NAME='a value'; a comment starts with #)",
                USAGE_ERROR,
            )
    values = dotenv.dotenv_values(stream=io.StringIO(text))
    for name, value in values.items():
        if value is not None:  # a bare `NAME` line has no value
            os.environ.setdefault(name, value)


def _fail(message: str, exit_code: int) -> int:
    print(message, file=sys.stderr)
    return exit_code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wxgate", description="Gateway for WeChat mini-program back ends.")
    parser.add_argument("--version", action="version", version=f"wxgate {__version__}")
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="configuration file (also after the command; default: $WXGATE_CONFIG, "
        "./wxgate.yaml, ./config/gateway.yaml, the bundled one)",
    )
    parser.add_argument(
        "--env-file", metavar="FILE", help="dotenv file of variables for the configuration (also after the command)"
    )
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
        add_init,
        add_new_plugin,
    ):
        add(sub)
    return parser
