"""``wxgate new-plugin``: the generated package works as generated.

It is installed with ``pip install --target`` into a directory of its own and used through
``PYTHONPATH`` in subprocesses only, so its entry points never reach this process or the
project's venv, and no later test sees its step.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.cli.new_plugin import plugin_names, write_plugin
from gateway.registry import Registry
from tests.helpers import post, start_on_a_free_port

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent


def run(*args: str | Path, cwd: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def clean_env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("WXGATE_", "PYTHONPATH", "MYPYPATH"))}
    return {**base, **extra}


def test_names_of_a_plugin() -> None:
    assert plugin_names("phone-region") == {
        "__STEP__": "phone_region",
        "__PACKAGE__": "wxgate_phone_region",
        "__DIST__": "wxgate-phone-region",
        "__CLASS__": "PhoneRegion",
    }


@pytest.mark.parametrize("name", ["Phone", "2fa", "phone region", "phone__region", "x" * 41])
def test_a_name_that_is_no_python_name_is_refused(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["new-plugin", name, "--dir", str(tmp_path / "p")]) == 2
    assert "is no plugin name" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()


def test_an_installed_step_name_or_a_used_directory_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["new-plugin", "decrypt", "--dir", str(tmp_path / "p")]) == 2
    assert "a step named 'decrypt' is installed already" in capsys.readouterr().err
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "notes.txt").write_text("mine")
    assert main(["new-plugin", "phone_region", "--dir", str(tmp_path / "used")]) == 2
    assert "is not an empty directory" in capsys.readouterr().err
    assert (tmp_path / "used" / "notes.txt").read_text() == "mine"


def test_mypy_is_pointed_at_an_editable_checkout(tmp_path: Path) -> None:
    write_plugin(tmp_path, plugin_names("phone_region"))
    pyproject = (tmp_path / "pyproject.toml").read_text()
    assert 'plugins = ["pydantic.mypy"]' in pyproject
    # this suite runs from a checkout installed with pip install -e
    assert f'mypy_path = "{ROOT.as_posix()}"' in pyproject


def test_the_generated_plugin_passes_its_checks_and_serves(tmp_path: Path) -> None:
    package, site = tmp_path / "wxgate-phone-region", tmp_path / "site"
    env = clean_env()
    made = run(BIN / "wxgate", "new-plugin", "phone_region", cwd=tmp_path, env=env)
    assert made.returncode == 0, made.stderr
    assert "pip install -e '.[test]'" in made.stdout

    installed = run(
        BIN / "python", "-m", "pip", "install", "-q", "--no-deps", "--target", site, ".", cwd=package, env=env
    )
    assert installed.returncode == 0, installed.stderr
    assert (site / "wxgate_phone_region-0.1.0.dist-info" / "entry_points.txt").is_file()
    for leftover in (package / "build", package / "wxgate_phone_region.egg-info"):
        shutil.rmtree(leftover, ignore_errors=True)  # the build's copies: one metadata, in site
    with_plugin = clean_env(PYTHONPATH=str(site))

    tests = run(BIN / "python", "-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=package, env=with_plugin)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "5 passed" in tests.stdout

    typed = run(BIN / "mypy", "--cache-dir", tmp_path / "mypy-cache", cwd=package, env=with_plugin)
    assert typed.returncode == 0, typed.stdout + typed.stderr
    assert "Success: no issues found in 5 source files" in typed.stdout

    for check in (["check", "."], ["format", "--check", "."]):
        linted = run(BIN / "ruff", *check, "--no-cache", cwd=package, env=with_plugin)
        assert linted.returncode == 0, linted.stdout + linted.stderr

    config = tmp_path / "gateway.yaml"
    config_text = """server: {{host: 127.0.0.1, port: {port}}}
storage: {{plugin: memory}}
pipelines:
  login: [code2session, persist_user, issue_session]
  phone:
    - check_session
    - decrypt: {{kind: phone}}
    - phone_region: {{field: area}}
    - respond
apps:
  demo: {{appid: wx0000000000demo0, secret: demo-secret-123, upstream: sandbox}}
"""
    config.write_text(config_text.format(port=8080))  # read, not served: serving writes a free port
    shown = run(BIN / "wxgate", "pipelines", config, cwd=tmp_path, env=with_plugin)
    assert shown.returncode == 0, shown.stderr
    assert "- phone_region  (" in shown.stdout
    assert "[needs: phone; gives: response]" in shown.stdout
    version = run(BIN / "wxgate", "version", cwd=tmp_path, env=with_plugin)
    assert "step phone_region 0.1.0 (entry point wxgate.steps:phone_region" in version.stdout
    assert "hooks wxgate-phone-region:phone_region" in version.stdout

    def start(port: int) -> subprocess.Popen[str]:
        config.write_text(config_text.format(port=port))  # server.port: no --port
        return subprocess.Popen(
            [str(BIN / "wxgate"), "serve", "--config", str(config)],
            cwd=tmp_path,
            env=with_plugin,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    server, _, base = start_on_a_free_port(start, timeout=60)
    try:
        status, device = post(f"{base}/_sandbox/demo/wx.login", {"user": "alice"})
        assert status == 200, device
        status, login = post(f"{base}/v1/demo/login", {"code": device["code"]})
        assert status == 200, login
        _, phone = post(f"{base}/_sandbox/demo/getPhoneNumber", {"user": "alice"})
        fields = {"encryptedData": phone["encryptedData"], "iv": phone["iv"]}
        status, answer = post(f"{base}/v1/demo/phone", fields, token=login["token"])
        assert status == 200, answer
        assert answer["area"] == "mainland China"  # the plugin's step, loaded from its entry point
        assert answer["countryCode"] == "86"
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_nothing_of_the_generated_plugin_leaked_into_this_process() -> None:
    assert "phone_region" not in Registry.discover().steps
