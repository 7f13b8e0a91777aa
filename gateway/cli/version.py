"""``wxgate version``: wxgate's version and every installed plugin's, with where each comes from."""

from __future__ import annotations

import argparse

from gateway import __version__
from gateway.cli.base import Subcommands, add_command
from gateway.hooks import Hooks
from gateway.registry import Registry


def add_version(sub: Subcommands) -> None:
    add_command(sub, "version", _version, help="print the version of wxgate and of every plugin")


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
