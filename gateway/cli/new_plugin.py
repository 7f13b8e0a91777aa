"""``wxgate new-plugin NAME [--dir DIR]``: write a plugin package that works as generated.

The package has a step named NAME with options and declared needs and gives, a hook
module, tests with :mod:`gateway.testing`, and the configuration of mypy (strict, with
the pydantic plugin) and ruff; ``pip install -e .`` then ``pytest``, ``mypy`` and
``ruff check .`` pass in it.
"""

from __future__ import annotations

import argparse
import re
from importlib.metadata import entry_points
from pathlib import Path

import gateway
from gateway import __version__
from gateway.cli import plugin_template as template
from gateway.cli.base import USAGE_ERROR, CLIError, Subcommands, add_command
from gateway.registry import STEP_GROUP

_NAME = re.compile(r"[a-z][a-z0-9]*(?:[_-][a-z0-9]+)*")


def add_new_plugin(sub: Subcommands) -> None:
    parser = add_command(
        sub, "new-plugin", _new_plugin, help="write a plugin package: a step, a hook, tests, mypy and ruff set up"
    )
    parser.add_argument("name", help="the step's name, e.g. phone_region (package wxgate_phone_region)")
    parser.add_argument("--dir", help="where to write it, a new or empty directory (default: ./wxgate-NAME)")


def _new_plugin(args: argparse.Namespace) -> int:
    names = plugin_names(args.name)
    target = Path(args.dir) if args.dir else Path.cwd() / names["__DIST__"]
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise CLIError(f"{target} exists and is not an empty directory: choose another with --dir", USAGE_ERROR)
    taken = {ep.name: ep.value for ep in entry_points(group=STEP_GROUP)}
    if names["__STEP__"] in taken:
        raise CLIError(
            f"a step named {names['__STEP__']!r} is installed already ({taken[names['__STEP__']]}): "
            "choose another name",
            USAGE_ERROR,
        )
    written = write_plugin(target, names)
    print(f"wrote {len(written)} files into {target}:")
    for path in written:
        print(f"  {path.relative_to(target)}")
    print(f"\nnext:\n  cd {target}\n  pip install -e '.[test]'\n  pytest && mypy && ruff check .")
    return 0


def plugin_names(name: str) -> dict[str, str]:
    """The markers of the templates for a plugin named ``name`` (a step name; ``-`` reads as ``_``)."""
    if not _NAME.fullmatch(name) or len(name) > 40:
        raise CLIError(
            f"{name!r} is no plugin name: lower-case letters, digits and '_' or '-', starting with a letter "
            "(e.g. phone_region)",
            USAGE_ERROR,
        )
    step = name.replace("-", "_")
    return {
        "__STEP__": step,
        "__PACKAGE__": f"wxgate_{step}",
        "__DIST__": f"wxgate-{step.replace('_', '-')}",
        "__CLASS__": "".join(part.capitalize() for part in step.split("_")),
    }


def write_plugin(target: Path, names: dict[str, str]) -> list[Path]:
    package = target / names["__PACKAGE__"]
    files = {
        target / "pyproject.toml": template.PYPROJECT,
        target / "README.md": template.README,
        target / ".gitignore": template.GITIGNORE,
        package / "__init__.py": template.INIT,
        package / "step.py": template.STEP,
        package / "hooks.py": template.HOOKS,
        package / "py.typed": "",
        target / "tests" / "conftest.py": template.CONFTEST,
        target / "tests" / f"test_{names['__STEP__']}.py": template.TESTS,
    }
    markers = {**names, "__WXGATE_REQUIREMENT__": _requirement(), "__MYPY_PATH__": _mypy_path()}
    for path, text in files.items():
        for marker, value in markers.items():
            text = text.replace(marker, value)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return list(files)


def _requirement() -> str:
    """wxgate within the series of this one: the plugin interface changes only with a new one."""
    major, minor = (int(part) for part in __version__.split(".")[:2])
    upper = f"{major + 1}.0" if major else f"0.{minor + 1}"
    return f"wxgate>={major}.{minor},<{upper}"


def _mypy_path() -> str:
    """mypy finds an installed wxgate in site-packages, but not one installed editable:
    setuptools' editable install is an import hook, which mypy does not run. Then the
    checkout is named, so that mypy works as generated."""
    checkout = Path(gateway.__file__).resolve().parent.parent
    if checkout.name in ("site-packages", "dist-packages"):
        return ""
    return template.MYPY_PATH.replace("__CHECKOUT__", checkout.as_posix())
