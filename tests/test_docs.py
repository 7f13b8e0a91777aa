"""The docs follow the code: these fail when README.md or docs/plugins.md drift from it.

The lists come from the code itself (the error hierarchy, the installed entry points, the
CLI parser, the config's flows), so adding an error, a step, an option, a storage or a
subcommand without documenting it fails here, naming what is missing.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from gateway.cli import _parser
from gateway.config import FLOWS
from gateway.errors import WECHAT_ERRCODES, GatewayError, all_error_classes
from gateway.registry import Registry

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
PLUGINS_GUIDE = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")

# Modules whose plugins and errors ship with wxgate; a third-party plugin installed in the
# same environment documents itself.
OWN_MODULES = ("gateway.", "wxgate_plugins.")


def _section(text: str, heading: str) -> str:
    """The body of the ``## heading`` section (up to the next ``## `` heading)."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert match is not None, f"README.md has no '## {heading}' section"
    return match.group(1)


def _table_rows(section: str) -> dict[str, list[str]]:
    """Rows of the markdown tables in ``section``, keyed by the backticked name in their first cell."""
    rows: dict[str, list[str]] = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")] if line.startswith("|") else []
        if cells and (name := re.fullmatch(r"`([^`]+)`", cells[0])):
            rows[name.group(1)] = cells
    return rows


def _own(cls: type[Any]) -> bool:
    return cls.__module__.startswith(OWN_MODULES)


def _own_error_classes() -> list[type[GatewayError]]:
    return [cls for cls in all_error_classes() if _own(cls)]


def test_every_error_code_is_in_the_error_table() -> None:
    rows = _table_rows(_section(README, "Errors"))
    missing = sorted({cls.code for cls in _own_error_classes()} - set(rows))
    assert not missing, f"README.md's error table has no row for: {missing}"


def test_error_table_statuses_match_the_code() -> None:
    rows = _table_rows(_section(README, "Errors"))
    wrong = {
        cls.code: (rows[cls.code][1], cls.status)
        for cls in _own_error_classes()
        if cls.code in rows and rows[cls.code][1] != str(cls.status)
    }
    assert not wrong, f"error table status (README, code) differs: {wrong}"


def test_error_table_shows_every_wechat_errcode_mapping() -> None:
    rows = _table_rows(_section(README, "Errors"))
    missing = []
    for errcode, cls in WECHAT_ERRCODES.items():
        row = rows.get(cls.code)
        listed = re.findall(r"-?\d+", row[-1]) if row else []
        if str(errcode) not in listed:
            missing.append(f"{errcode} -> {cls.code}")
    assert not missing, f"README.md's error table lacks these WeChat errcode mappings: {missing}"


def _own_steps() -> dict[str, type[Any]]:
    steps = {name: cls for name, cls in Registry.discover().steps.items() if _own(cls)}
    assert steps, "no built-in step is registered: is wxgate installed (pip install -e .)?"
    return steps


def test_every_step_has_a_row_in_the_steps_table() -> None:
    rows = _table_rows(_section(README, "Built-in steps"))
    missing = sorted(set(_own_steps()) - set(rows))
    assert not missing, f"README.md's steps table has no row for: {missing}"


def test_every_step_option_is_documented_in_its_row() -> None:
    rows = _table_rows(_section(README, "Built-in steps"))
    missing = [
        f"{name}.{option}"
        for name, cls in sorted(_own_steps().items())
        for option in cls.Options.model_fields
        if name in rows and f"`{option}`" not in " | ".join(rows[name])
    ]
    assert not missing, f"README.md's steps table does not mention these options: {missing}"


def test_every_step_is_mentioned_in_the_plugin_guide() -> None:
    missing = sorted(name for name in _own_steps() if f"`{name}`" not in PLUGINS_GUIDE)
    assert not missing, f"docs/plugins.md does not mention these built-in steps: {missing}"


def test_every_storage_and_its_options_are_documented() -> None:
    storage_docs = _section(README, "Configuration")
    storages = {name: cls for name, cls in Registry.discover().storages.items() if _own(cls)}
    assert storages, "no built-in storage is registered"
    missing = [f"storage {name}" for name in sorted(storages) if f"`{name}`" not in storage_docs]
    options: dict[str, type[BaseModel]] = {name: cls.Options for name, cls in storages.items()}
    missing += [
        f"{name}.{option}"
        for name, model in sorted(options.items())
        for option in model.model_fields
        if f"`{option}`" not in storage_docs
    ]
    assert not missing, f"README.md's configuration reference does not mention: {missing}"


def test_every_flow_is_in_the_pipelines_table() -> None:
    rows = _table_rows(_section(README, "Configuration"))
    missing = sorted(set(FLOWS) - set(rows))
    assert not missing, f"README.md's pipelines table has no row for the flows: {missing}"


def test_every_cli_subcommand_is_documented() -> None:
    actions = [a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction)]
    assert actions, "the CLI parser has no subcommands"
    commands = sorted(name for action in actions for name in action.choices)
    cli_docs = _section(README, "CLI")
    missing = [name for name in commands if f"`wxgate {name}" not in cli_docs]
    assert not missing, f"README.md's CLI section does not document: {missing}"


def test_readme_gives_the_two_setup_commands() -> None:
    setup = _section(README, "Set-up")
    for command in ("make run", "make test"):
        assert re.search(rf"^{command}\b", setup, re.MULTILINE), f"README.md's Set-up does not give `{command}`"
