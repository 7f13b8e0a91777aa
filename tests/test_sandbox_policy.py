"""The sandbox cannot be misused: not on a shared appid with a real app, not on an
address others reach unless the operator says so."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from pathlib import Path

import pytest

from gateway.config import Config, is_loopback, parse_config
from gateway.errors import ConfigError
from tests.helpers import ROOT, WXGATE, run_cli, start_on_a_free_port

REAL = """
  shop:
    appid: wx00000000000shop
    secret: real-secret-123
    upstream: https://api.weixin.qq.com
"""
SANDBOX_ON_SHOP = """
  demo:
    appid: wx00000000000shop
    secret: sandbox-secret
    upstream: sandbox
"""


def parse(apps: str, top: str = "") -> Config:
    return parse_config(top + "apps:" + apps, "gw.yaml", env={})


def test_a_sandbox_app_on_a_real_apps_appid_is_refused_at_load() -> None:
    with pytest.raises(ConfigError) as caught:
        parse(REAL + SANDBOX_ON_SHOP)
    message = str(caught.value)
    assert message.startswith("gw.yaml:8: apps.demo.appid: ")  # the second app's appid line
    assert "app 'demo' has the appid of app 'shop'" in message


def test_two_names_for_one_app_may_share_its_appid() -> None:
    alias = REAL.replace("shop:", "store:")
    config = parse(REAL + alias)
    assert config.apps["shop"].appid == config.apps["store"].appid


def test_two_real_apps_with_one_appid_and_two_secrets_are_refused() -> None:
    other = REAL.replace("shop:", "store:").replace("real-secret-123", "another-secret")
    with pytest.raises(ConfigError):
        parse(REAL + other)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("[::1]", True), ("localhost", True),
     ("0.0.0.0", False), ("", False), ("::", False), ("10.1.2.3", False), ("gateway.example.com", False)],
)  # fmt: skip
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_sandbox_bind_refusal_unless_public() -> None:
    config = parse(SANDBOX_ON_SHOP)
    assert config.sandbox_bind_refusal("127.0.0.1") is None
    refusal = config.sandbox_bind_refusal("0.0.0.0")
    assert refusal is not None
    assert "demo" in refusal
    assert "sandbox: {public: true}" in refusal
    assert parse(SANDBOX_ON_SHOP, "sandbox: {public: true}\n").sandbox_bind_refusal("0.0.0.0") is None
    assert parse(REAL).sandbox_bind_refusal("0.0.0.0") is None  # no sandbox app: nothing to refuse


def test_mixed_sandbox_and_real_apps_are_noticed() -> None:
    assert parse(REAL + SANDBOX_ON_SHOP.replace("wx00000000000shop", "wx000000000000demo")).mixes_sandbox_and_real
    assert not parse(REAL).mixes_sandbox_and_real
    assert not parse(SANDBOX_ON_SHOP).mixes_sandbox_and_real


def test_serve_refuses_the_default_sandbox_on_every_address() -> None:
    # refused before anything listens: the default config's demo app is a sandbox app
    result = run_cli("serve", "--host", "0.0.0.0", "--port", "0")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "not a loopback address" in result.stderr


def test_sandbox_beside_real_apps_is_a_warning_at_start(tmp_path: Path) -> None:
    config = tmp_path / "mixed.yaml"
    config.write_text(
        "server: {log_format: json}\nstorage: {plugin: memory}\napps:"
        + REAL
        + SANDBOX_ON_SHOP.replace("wx00000000000shop", "wx000000000000demo")
    )
    proc, _, _ = start_on_a_free_port(
        lambda port: subprocess.Popen(
            [WXGATE, "serve", "--config", str(config), "--port", str(port)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    )
    proc.send_signal(signal.SIGTERM)  # it has started: what it warned of is in its output
    out, _ = proc.communicate(timeout=30)
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    warnings = [e for e in events if e["event"] == "sandbox_beside_real_apps"]
    assert len(warnings) == 1, out
    assert warnings[0]["sandbox_apps"] == ["demo"]
    assert warnings[0]["level"] == "warning"


def test_the_standalone_sandbox_refuses_every_address_too() -> None:
    result = run_cli("sandbox", "--host", "0.0.0.0", "--port", "0")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "not a loopback address" in result.stderr


def test_simulated_users_are_bounded_oldest_first() -> None:
    from gateway.sandbox import SandboxApp, SandboxWorld

    app = SandboxApp("demo", "wx000000000000demo", "secret")
    world = SandboxWorld(apps=[app], max_users=3)

    async def logins() -> None:
        for name in ("a", "b", "c", "d"):
            await world.wx_login(app, name)
        assert [user for _, user in world.users] == ["b", "c", "d"]
        await world.wx_login(app, "b")  # a known user logging in again is not a new one
        assert len(world.users) == 3

    asyncio.run(logins())


def test_validate_refuses_what_serve_would_naming_the_line_of_server_host(tmp_path: Path) -> None:
    config = tmp_path / "public.yaml"
    config.write_text("server:\n  host: 0.0.0.0\n  port: 0\nstorage: {plugin: memory}\napps:" + SANDBOX_ON_SHOP)
    for command in (["validate", str(config)], ["serve", "--config", str(config)]):
        result = run_cli(*command)
        assert result.returncode == 2, (command, result.stdout + result.stderr)
        assert f"{config}:2: server.host: app(s) demo use upstream: sandbox" in result.stderr, result.stderr
    public = tmp_path / "demo.yaml"
    public.write_text(config.read_text().replace("storage:", "sandbox: {public: true}\nstorage:"))
    assert run_cli("validate", str(public)).returncode == 0
