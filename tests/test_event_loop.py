"""server.event_loop: uvloop by default where installed, the standard loop on request, and a
choice the machine cannot honour refused at load with the fix in the message."""

from __future__ import annotations

import json
import platform
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from gateway import config as config_module
from gateway import event_loop
from gateway.config import parse_config
from gateway.errors import ConfigError
from gateway.registry import Registry
from tests.helpers import WXGATE, start_on_a_free_port

APP = """apps:
  demo:
    appid: wx1234567890
    secret: s3cr3t
    upstream: sandbox
"""


DEPENDS_ON_UVLOOP = sys.platform != "win32" and platform.python_implementation() == "CPython"  # setup.cfg's marker
needs_uvloop = pytest.mark.skipif(not event_loop.uvloop_installed(), reason="uvloop is not installed here")


async def _name() -> str:
    return event_loop.running_loop_name()


def test_uvloop_is_installed_where_wxgate_depends_on_it() -> None:
    assert event_loop.uvloop_installed() == DEPENDS_ON_UVLOOP


@needs_uvloop
def test_auto_is_uvloop_where_installed_and_asyncio_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    assert event_loop.resolve("auto") == "uvloop"
    assert event_loop.run(_name(), "auto") == "uvloop"
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as where it cannot be imported
    assert not event_loop.uvloop_installed()
    assert event_loop.resolve("auto") == "asyncio"
    assert event_loop.run(_name(), "auto") == "asyncio"


@pytest.mark.parametrize("choice", [pytest.param("uvloop", marks=needs_uvloop), "asyncio"])
def test_run_uses_the_chosen_loop(choice: event_loop.EventLoopChoice) -> None:
    assert event_loop.run(_name(), choice) == choice


def test_uvloop_not_installed_is_refused_at_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config_module, "uvloop_installed", lambda: False)
    with pytest.raises(ConfigError) as exc_info:
        parse_config("server:\n  port: 8080\n  event_loop: uvloop\n" + APP, "gw.yaml", Registry.discover(), env={})
    message = str(exc_info.value)
    assert message.startswith("gw.yaml:3: server.event_loop: ")
    assert "pip install uvloop" in message
    assert "event_loop: auto" in message
    # auto and asyncio still load there
    for choice in ("auto", "asyncio"):
        config = parse_config(f"server:\n  event_loop: {choice}\n" + APP, "gw.yaml", Registry.discover(), env={})
        assert config.server.event_loop == choice


def test_unknown_loop_is_refused_with_the_choices() -> None:
    with pytest.raises(ConfigError) as exc_info:
        parse_config("server:\n  event_loop: trio\n" + APP, "gw.yaml", Registry.discover(), env={})
    message = str(exc_info.value)
    assert message.startswith("gw.yaml:2: server.event_loop: ")
    assert "'auto', 'uvloop' or 'asyncio'" in message


def test_a_gateway_on_the_standard_loop_serves_and_says_so(tmp_path: Path) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text("server:\n  log_format: json\n  event_loop: asyncio\nstorage: {plugin: memory}\n" + APP)
    proc, _, base = start_on_a_free_port(
        lambda port: subprocess.Popen(
            [WXGATE, "serve", "--config", str(config), "--port", str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    )
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    started = [json.loads(line) for line in out.splitlines() if '"gateway_started"' in line]
    assert started, out
    assert started[0]["event_loop"] == "asyncio"
    assert base.startswith("http://127.0.0.1:")
