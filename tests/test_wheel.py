"""wxgate as a user installs it: the wheel built from this tree, installed with pip into a fresh
virtual environment (its dependencies from the package index, as for anyone), then `wxgate serve`
in an empty directory, where only the bundled default configuration can be found, serving a
sandbox login over HTTP."""

from __future__ import annotations

import configparser
import json
import os
import shutil
import signal
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import ROOT, post, start_on_a_free_port

# What a wheel is built from: the files setup.cfg reads. A copy, so that the build leaves
# nothing (build/, *.egg-info) in the checkout others work in.
SOURCES = ("gateway", "plugins", "config", "setup.cfg", "pyproject.toml", "README.md")


def _declared_packages() -> set[str]:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    return {line.strip() for line in parser["options"]["packages"].splitlines() if line.strip()}


def test_setup_cfg_lists_every_package_of_the_tree() -> None:
    """setup.cfg names its packages one by one (plugins/ installs as wxgate_plugins); a new
    package left out of the list would be missing from every installed copy."""
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts).replace("plugins", "wxgate_plugins", 1)
        for top in ("gateway", "plugins")
        for init in (ROOT / top).rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    assert on_disk <= _declared_packages(), f"setup.cfg's packages lack: {sorted(on_disk - _declared_packages())}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = tmp_path_factory.mktemp("source")
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "var"))
        else:
            shutil.copy2(ROOT / name, source / name)
    out = tmp_path_factory.mktemp("dist")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    built = subprocess.run(
        [*pip, "wheel", "--no-deps", "-w", str(out), str(source)], capture_output=True, text=True, timeout=300
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (found,) = out.glob("wxgate-*.whl")
    return found


def test_the_wheel_carries_the_default_configuration_and_every_module(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "gateway/bundled/gateway.yaml" in names
    bundled = zipfile.ZipFile(wheel).read("gateway/bundled/gateway.yaml").decode()
    assert bundled == (ROOT / "config" / "gateway.yaml").read_text(encoding="utf-8")
    for module in ("gateway/cli/__init__.py", "gateway/cli/init.py", "wxgate_plugins/storages/mongo.py"):
        assert module in names


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    # this wheel by its path (never a "wxgate" from the index), its dependencies from the index
    # (pip's cache makes later runs quick)
    done = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--disable-pip-version-check", "--quiet", str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return venv


@pytest.fixture
def served(installed: Path, tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WXGATE_", "PYTHON", "VIRTUAL_ENV"))}
    proc, _, url = start_on_a_free_port(
        lambda port: subprocess.Popen(
            [str(installed / "bin" / "wxgate"), "serve", "--port", str(port)],
            cwd=empty,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**env, "WXGATE_LOG_FORMAT": "json"},
        )
    )
    try:
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=30)


@pytest.mark.timeout(900)  # the first run downloads the dependencies into a new environment
def test_pip_installed_wxgate_serves_a_sandbox_login_from_an_empty_directory(
    served: tuple[str, subprocess.Popen[str]], installed: Path
) -> None:
    base, proc = served
    status, device = post(base + "/_sandbox/demo/wx.login", {"user": "wheel-user"})
    assert status == 200, device
    status, login = post(base + "/v1/demo/login", {"code": device["code"]})
    assert status == 200, login
    assert login["token"]
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    started = [
        event
        for line in out.splitlines()
        if line.startswith("{") and (event := json.loads(line))["event"] == "gateway_started"
    ]
    # it says which file it serves: the default inside the installed package, not this checkout's
    (config,) = {event["config"] for event in started}
    assert config.startswith(str(installed)), config
    assert config.endswith("gateway/bundled/gateway.yaml"), config
