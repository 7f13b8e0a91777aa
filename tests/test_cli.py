"""The commands, run as a user would: real processes, real ports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway.sandbox.world import phone_for
from gateway.wechat import crypto
from tests.helpers import ROOT, WXGATE, free_port, post, run_cli, wait_until_up


def test_validate_default_config() -> None:
    result = run_cli("validate", "config/gateway.yaml")
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout


def test_validate_reports_file_line_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apps:\n  demo:\n    appid: wx0000000000demo0\n    secret: s\n    timeout: soon\n    upstream: sandbox\n"
    )
    result = run_cli("validate", str(bad))
    assert result.returncode == 2
    assert f"{bad}:5: apps.demo.timeout:" in result.stderr
    assert "number" in result.stderr


def test_validate_missing_secret_variable(tmp_path: Path) -> None:
    bad = tmp_path / "env.yaml"
    bad.write_text(
        "apps:\n  demo:\n    appid: wx0000000000demo0\n    secret: ${WXGATE_TEST_UNSET_SECRET}\n    upstream: sandbox\n"
    )
    result = run_cli("validate", str(bad))
    assert result.returncode == 2
    assert f"{bad}:4: apps.demo.secret: environment variable WXGATE_TEST_UNSET_SECRET is not set" in result.stderr
    ok = run_cli("validate", str(bad), env={"WXGATE_TEST_UNSET_SECRET": "x"})
    assert ok.returncode == 0, ok.stderr


def test_decrypt_prints_the_object_with_watermark() -> None:
    key = crypto.new_session_key()
    payload = {"phoneNumber": "13800138000", "watermark": {"appid": "wxabc", "timestamp": 1700000000}}
    data, iv = crypto.encrypt_json(key, payload)
    result = run_cli("decrypt", "--appid", "wxabc", "--session-key", key, "--iv", iv, "--data", data)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == payload


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--appid": "wxother"}, "watermark appid"),
        ({"--session-key": crypto.new_session_key()}, "decryption failed"),
        ({"--iv": "AAAA"}, "iv must decode to 16 bytes"),
    ],
)
def test_decrypt_failures_exit_non_zero(change: dict[str, str], message: str) -> None:
    key = crypto.new_session_key()
    data, iv = crypto.encrypt_json(key, {"a": 1, "watermark": {"appid": "wxabc", "timestamp": 1}})
    args = {"--appid": "wxabc", "--session-key": key, "--iv": iv, "--data": data, **change}
    result = run_cli("decrypt", *[x for pair in args.items() for x in pair])
    assert result.returncode == 1
    assert message in result.stderr
    assert result.stdout == ""


def test_encrypt_then_decrypt() -> None:
    key = crypto.new_session_key()
    out = run_cli("encrypt", "--session-key", key, "--json", '{"x": "\u4f60\u597d", "watermark": {"appid": "wxq"}}')
    assert out.returncode == 0, out.stderr
    enc = json.loads(out.stdout)
    assert crypto.decrypt_json(key, enc["iv"], enc["encryptedData"])["x"] == "\u4f60\u597d"


def start_run_py(workdir: Path, port: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "run.py"), "--port", str(port)],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "WXGATE_LOG_FORMAT": "json"},
    )


def stop(proc: subprocess.Popen[str]) -> list[dict[str, Any]]:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert phone_for("cli-user") not in out
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_run_py_serves_the_embedded_default_and_persists(tmp_path: Path) -> None:
    """The README's first command: `python run.py` with no set-up serves a working demo
    on the embedded MongoDB, whose data (under ./var) survives a restart."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start_run_py(tmp_path, port)
    try:
        wait_until_up(base + "/healthz", proc)
        _, device_login = post(base + "/_sandbox/demo/wx.login", {"user": "cli-user"})
        status, login = post(base + "/v1/demo/login", {"code": device_login["code"]})
        assert status == 200, login
        _, device = post(base + "/_sandbox/demo/getPhoneNumber", {"user": "cli-user"})
        fields = {"encryptedData": device["encryptedData"], "iv": device["iv"]}
        status, phone = post(base + "/v1/demo/phone", fields, login["token"])
        assert status == 200, phone
        assert phone["purePhoneNumber"] == phone_for("cli-user")
    finally:
        events = stop(proc)
    names = [e["event"] for e in events]
    assert names[0] == "gateway_started"
    assert names[-1] == "gateway_stopped"
    assert sum(1 for e in events if e["event"] == "request" and e.get("flow") == "phone") == 1
    assert (tmp_path / "var" / "mongo" / "wxgate.db").is_file()
    # the key beside the data, not in it: a copy of the data alone does not open it
    assert (tmp_path / "var" / "keys" / "mongo.key").stat().st_mode & 0o777 == 0o600
    assert not (tmp_path / "var" / "mongo" / "storage.key").exists()

    # Restarted: the login token from before still works (the sandbox, in memory, starts
    # afresh, so the phone comes through the phone-code flow, which needs no old key).
    proc = start_run_py(tmp_path, port)
    try:
        wait_until_up(base + "/healthz", proc)
        post(base + "/_sandbox/demo/wx.login", {"user": "cli-user"})
        _, device = post(base + "/_sandbox/demo/getPhoneNumber", {"user": "cli-user"})
        status, phone = post(base + "/v1/demo/phone", {"code": device["code"]}, login["token"])
        assert status == 200, phone
        assert phone["purePhoneNumber"] == phone_for("cli-user")
    finally:
        stop(proc)


def test_standalone_sandbox_is_a_real_upstream(tmp_path: Path) -> None:
    """`wxgate sandbox` on its own port; the gateway reaches it as it would reach WeChat."""
    sandbox_port, gateway_port = free_port(), free_port()
    config = tmp_path / "split.yaml"
    config.write_text(
        "pipelines:\n"
        "  login: [code2session, issue_session]\n"
        "  phone: [check_session, {decrypt: {kind: phone}}, watermark, mask_guard, respond]\n"
        "apps:\n"
        "  shop:\n"
        "    appid: wx00000000000shop\n"
        "    secret: shop-secret\n"
        f"    upstream: http://127.0.0.1:{sandbox_port}\n"
    )
    sandbox = subprocess.Popen(
        [WXGATE, "sandbox", "--config", str(config), "--port", str(sandbox_port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    gateway = subprocess.Popen(
        [WXGATE, "serve", "--config", str(config), "--port", str(gateway_port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        sb, gw = f"http://127.0.0.1:{sandbox_port}", f"http://127.0.0.1:{gateway_port}"
        wait_until_up(sb + "/_sandbox/_faults", sandbox)
        wait_until_up(gw + "/healthz", gateway)
        # No app uses the mounted sandbox, so the gateway serves no /_sandbox/ routes.
        status, body = post(gw + "/_sandbox/shop/wx.login", {"user": "u"})
        assert (status, body["error"]["code"]) == (404, "not_found")
        _, code = post(sb + "/_sandbox/shop/wx.login", {"user": "split"})
        status, login = post(gw + "/v1/shop/login", {"code": code["code"]})
        assert status == 200, login
        _, device = post(sb + "/_sandbox/shop/getPhoneNumber", {"user": "split"})
        status, phone = post(
            gw + "/v1/shop/phone", {"encryptedData": device["encryptedData"], "iv": device["iv"]}, login["token"]
        )
        assert status == 200, phone
        assert phone["phoneNumber"] == phone_for("split")
    finally:
        for proc in (gateway, sandbox):
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=20)


def test_negative_processes_is_refused() -> None:
    result = run_cli("serve", "--processes", "-1", "--port", "0")
    assert result.returncode == 2
    assert "must be 0 (one per CPU) or more" in result.stderr


def test_unreachable_storage_at_start_is_a_clean_error(tmp_path: Path) -> None:
    config = tmp_path / "down.yaml"
    key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
    config.write_text(
        "storage:\n  plugin: mongo\n"
        f"  options: {{uri: 'mongodb://127.0.0.1:{free_port()}/', timeout_ms: 300, encryption_key: '{key}'}}\n"
        "apps:\n  demo: {appid: wx0000000000demo0, secret: s, upstream: sandbox}\n"
    )
    result = run_cli("serve", "--config", str(config), "--port", "0")
    assert result.returncode == 1
    assert "storage is unavailable" in result.stderr
    assert "Traceback" not in result.stderr
