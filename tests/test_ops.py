"""Operating wxgate: health, readiness, metrics, OpenAPI against live answers, rate
limits, hot reload in-process and by signal, and the ops commands."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from gateway.config import parse_config
from gateway.openapi import build_openapi
from gateway.testing import GatewayTestCase
from tests.helpers import ROOT, WXGATE, post, run_cli, start_on_a_free_port

CONFIG = """
storage: {plugin: memory}
pipelines:
  login:
    - rate_limit: {per: ip, limit: 5, window: 60}
    - code2session
    - rate_limit: {per: openid, limit: 3, window: 60}
    - persist_user
    - issue_session
  phone: [check_session, {decrypt: {kind: phone}}, watermark, mask_guard, respond]
  phone_oneshot: [code2session, {decrypt: {kind: phone}}, watermark, mask_guard, respond]
  phone_code: [check_session, phone_code, watermark, mask_guard, respond]
  userinfo: [check_session, {decrypt: {kind: userinfo}}, verify_signature, watermark, respond]
apps:
  demo: {appid: wx0000000000demo0, secret: demo-secret-123, upstream: sandbox}
  far: {appid: wx00000000000far0, secret: far-secret-1234, upstream: "http://127.0.0.1:9"}
"""

OPENAPI = build_openapi()


def validate(path: str, method: str, status: int, body: Any) -> None:
    """The live answer fits the document: a documented status, and the schema for it."""
    operation = OPENAPI["paths"][path][method]
    assert str(status) in operation["responses"], f"{method} {path} answered undocumented {status}"
    content = operation["responses"][str(status)].get("content", {}).get("application/json")
    if content and "schema" in content:
        schema = {**content["schema"], "components": OPENAPI["components"]}
        jsonschema.validate(body, schema)


class OpsTest(GatewayTestCase):
    config_text = CONFIG

    def test_health_and_readiness(self) -> None:
        status, body, _ = self.call("/healthz", method="GET")
        assert (status, body["status"]) == (200, "ok")
        assert body["config"] == self.config.digest
        status, body, _ = self.call("/readyz", method="GET")
        assert status == 503  # the far app's upstream (port 9) is unreachable
        assert body["checks"] == {"storage": "ok", "upstream:demo": "ok", "upstream:far": "unreachable"}
        validate("/readyz", "get", status, body)

    def test_metrics_count_requests_steps_upstream_and_config(self) -> None:
        self.login("mo")
        self.call("/v1/demo/login", {"code": "bad"})
        response = self.fetch("/metrics")
        assert response.code == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.body.decode()
        assert 'wxgate_requests_total{app="demo",flow="login",status="200"} 1.0' in text
        assert 'wxgate_requests_total{app="demo",flow="login",status="400"} 1.0' in text
        assert [line for line in text.splitlines() if line.startswith("wxgate_flow_errors_total")] == [
            'wxgate_flow_errors_total{app="demo",code="invalid_code",flow="login"} 1.0'
        ]
        assert 'wxgate_step_duration_seconds_count{flow="login",step="code2session"} 2.0' in text
        assert 'wxgate_upstream_calls_total{api="jscode2session",errcode="0"} 1.0' in text
        assert 'wxgate_upstream_calls_total{api="jscode2session",errcode="40029"} 1.0' in text
        assert f'wxgate_config_info{{digest="{self.config.digest}"}} 1.0' in text
        assert 'wxgate_outbox_events{status="pending"} 0.0' in text
        assert re.search(r'wxgate_request_duration_seconds_bucket\{app="demo",flow="login",le="0\.1"\} 2\.0', text)

    def test_unknown_apps_do_not_become_metric_labels(self) -> None:
        self.call("/v1/attacker-chosen-name/login", {"code": "x"})
        assert "attacker-chosen-name" not in self.fetch("/metrics").body.decode()

    def test_rate_limits_per_ip_and_per_openid(self) -> None:
        for _ in range(3):
            assert self.call("/v1/demo/login", {"code": self.wx_login("ray")})[0] == 200
        status, body, response = self.call("/v1/demo/login", {"code": self.wx_login("ray")})
        assert (status, body["error"]["code"]) == (429, "rate_limited")
        assert "user" in body["error"]["message"]
        assert 1 <= int(response.headers["Retry-After"]) <= 60
        validate("/v1/{app}/login", "post", status, body)
        status, body, _ = self.call("/v1/demo/login", {"code": self.wx_login("sid")})
        assert status == 200  # another user, same address: the 5th request from it
        status, body, _ = self.call("/v1/demo/login", {"code": self.wx_login("tom")})
        assert (status, body["error"]["code"]) == (429, "rate_limited")
        assert "address" in body["error"]["message"]
        metrics = self.fetch("/metrics").body.decode()
        assert 'wxgate_rate_limited_total{app="demo",flow="login",per="openid"} 1.0' in metrics
        assert 'wxgate_rate_limited_total{app="demo",flow="login",per="ip"} 1.0' in metrics

    def test_live_answers_fit_the_openapi_document(self) -> None:
        status, document, _ = self.call("/openapi.json", method="GET")
        assert status == 200
        assert document == json.loads(json.dumps(OPENAPI))
        login = self.call("/v1/demo/login", {"code": self.wx_login("uma")})
        validate("/v1/{app}/login", "post", login[0], login[1])
        token = login[1]["token"]
        device = self.get_phone_number("uma")
        fields = {"encryptedData": device["encryptedData"], "iv": device["iv"]}
        cases: list[tuple[str, str, int, dict[str, Any]]] = []
        for path, fields_, tok in [
            ("/v1/demo/phone", fields, token),
            ("/v1/demo/phone", {"code": device["code"]}, token),
            ("/v1/demo/phone", {"encryptedData": "AAAA", "iv": "AAAA"}, token),
            ("/v1/demo/phone", {}, None),
            ("/v1/demo/phone", fields, "wrong-token"),
            ("/v1/demo/login", {}, None),
            ("/v1/nope/login", {"code": "x"}, None),
            ("/v1/far/login", {"code": "abc"}, None),
        ]:
            status, body, _ = self.call(path, fields_, token=tok)
            cases.append((re.sub(r"/v1/[^/]+/", "/v1/{app}/", path), "post", status, body))
        profile = self.get_user_profile("uma")
        status, body, _ = self.call("/v1/demo/userinfo", {k: profile[k] for k in ("encryptedData", "iv")}, token=token)
        cases.append(("/v1/{app}/userinfo", "post", status, body))
        status, body, _ = self.call("/v1/demo/phone?code=x&encryptedData=y&iv=z", method="GET")
        cases.append(("/v1/{app}/phone", "get", status, body))
        assert {c[2] for c in cases} >= {200, 400, 401, 404, 502}
        for path, method, status, body in cases:
            validate(path, method, status, body)

    def test_every_error_code_is_in_the_document(self) -> None:
        from gateway.errors import all_error_classes

        enum = set(OPENAPI["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]["enum"])
        assert {cls.code for cls in all_error_classes()} == enum

    def test_reload_swaps_pipelines_and_keeps_sessions(self) -> None:
        token = self.login("vic")["token"]
        old = self.gateway.current
        new_text = CONFIG.replace("phone: [check_session,", "phone: [check_session, {rate_limit: {per: ip, limit: 1}},")
        self.gateway.reload(parse_config(new_text, "<reloaded>"))
        assert self.gateway.current is not old
        assert self.gateway.config.digest != old.config.digest
        device = self.get_phone_number("vic")
        fields = {"encryptedData": device["encryptedData"], "iv": device["iv"]}
        assert self.call("/v1/demo/phone", fields, token=token)[0] == 200  # the session survived
        assert self.call("/v1/demo/phone", fields, token=token)[0] == 429  # the new step is live
        metrics = self.fetch("/metrics").body.decode()
        assert f'wxgate_config_info{{digest="{self.gateway.config.digest}"}} 1.0' in metrics
        assert f'wxgate_config_info{{digest="{old.config.digest}"}} 0.0' in metrics
        assert 'wxgate_config_reloads_total{result="ok",worker="0"} 1.0' in metrics

    def test_reload_refuses_storage_changes(self) -> None:
        from gateway.errors import ConfigError

        with pytest.raises(ConfigError, match="storage: changes to the storage need a restart"):
            self.gateway.reload(
                parse_config(CONFIG.replace("storage: {plugin: memory}", "storage: {plugin: mongo}"), "x")
            )


def test_production_example_is_valid_with_its_variables() -> None:
    env = {
        "WXGATE_MONGO_URI": "mongodb://db1:27017,db2:27017/?replicaSet=rs0",
        "WXGATE_STORAGE_KEY": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
        "SHOP_APPID": "wx1111111111111111",
        "SHOP_SECRET": "shop-secret",
        "CLUB_APPID": "wx2222222222222222",
        "CLUB_SECRET": "club-secret",
        "WXGATE_WEBHOOK_URL": "https://crm.example.com/hooks/wxgate",
        "WXGATE_WEBHOOK_SECRET": "0123456789abcdef0123",
        "WXGATE_PHONE_HASH_KEY": "0123456789abcdef-hash",
    }
    result = subprocess.run(
        [WXGATE, "validate", "config/production.example.yaml"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**env, "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    missing = subprocess.run(
        [WXGATE, "validate", "config/production.example.yaml"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert missing.returncode == 2
    assert "environment variable" in missing.stderr


def test_pipelines_command_masks_secrets(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG.replace("demo-secret-123", "VERY-SECRET-VALUE") + "\n")
    result = run_cli("pipelines", str(config), "--json")
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert "VERY-SECRET-VALUE" not in result.stdout
    assert shown["demo"]["secret"] == "***"
    assert shown["demo"]["flows"]["login"][0] == {"rate_limit": {"per": "ip", "limit": 5, "window": 60}}
    text = run_cli("pipelines", str(config), "--app", "demo").stdout
    assert "    - decrypt  (kind='phone', try_previous_key=True)" in text


@pytest.mark.parametrize("flow", ["login", "phone", "phone_code", "phone_oneshot", "userinfo"])
def test_dry_run_every_flow_of_the_default_config(flow: str) -> None:
    result = run_cli("dry-run", "config/gateway.yaml", "--app", "demo", "--flow", flow)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["status"] == 200
    assert report["steps_ms"]


def test_dry_run_shows_the_failing_step() -> None:
    result = run_cli("dry-run", "config/gateway.yaml", "--app", "demo", "--flow", "phone", "--input", '{"iv": "AAAA"}')
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["failed"] == {"step": "decrypt", "error": "invalid_encrypted_data", "status": 400}


def test_version_lists_plugins() -> None:
    result = run_cli("version")
    assert result.returncode == 0
    assert result.stdout.startswith("wxgate 0.1.0\n")
    assert "step phone_blocklist 1.0.0" in result.stdout
    assert "(distribution wxgate-plugin-example)" in result.stdout


def test_every_command_has_help() -> None:
    import argparse

    from gateway.cli import _parser

    (subparsers,) = [a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction)]
    commands = list(subparsers.choices)
    assert len(commands) >= 10
    for name in commands:
        result = run_cli(name, "--help")
        assert result.returncode == 0, name
        assert f"usage: wxgate {name}" in result.stdout


def test_sighup_reloads_and_an_invalid_file_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "live.yaml"
    pid_file = tmp_path / "wxgate.pid"
    base_text = CONFIG.replace(
        "storage: {plugin: memory}",
        f"storage: {{plugin: memory}}\nserver: {{pid_file: '{pid_file}', log_format: json}}",
    )
    config.write_text(base_text)
    log = tmp_path / "gateway.log"  # a file, read while the gateway runs

    def start(port: int) -> subprocess.Popen[str]:
        with log.open("w") as out:
            return subprocess.Popen(
                [WXGATE, "serve", "--config", str(config), "--port", str(port)],
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
            )

    proc, _, base = start_on_a_free_port(start, output=lambda _: log.read_text())
    try:
        pid_line, path_line = pid_file.read_text().splitlines()
        assert (int(pid_line), path_line) == (proc.pid, str(config.resolve()))
        other = tmp_path / "other.yaml"  # valid, same pid_file, but not the file the gateway re-reads
        other.write_text(base_text)
        mismatch = run_cli("reload", "--config", str(other))
        assert mismatch.returncode == 2
        assert f"the gateway re-reads {config.resolve()}" in mismatch.stderr
        digest = json.loads(subprocess.run(["curl", "-s", base + "/healthz"], capture_output=True, text=True).stdout)[
            "config"
        ]
        # an invalid file: `wxgate reload` refuses it before signalling, with file:line
        config.write_text(base_text.replace("limit: 5", "limit: five"))
        refused = run_cli("reload", "--config", str(config))
        assert refused.returncode == 2
        assert f"{config}:" in refused.stderr
        assert "limit" in refused.stderr
        # a raw SIGHUP with the invalid file: the gateway keeps its config
        proc.send_signal(signal.SIGHUP)
        # until it has read the file and refused it (before the file changes again, however slow)
        deadline = time.monotonic() + 15
        while '"config_reload_refused"' not in log.read_text():
            assert time.monotonic() < deadline, "the SIGHUP was not acted on"
            time.sleep(0.05)
        assert (
            json.loads(subprocess.run(["curl", "-s", base + "/healthz"], capture_output=True, text=True).stdout)[
                "config"
            ]
            == digest
        )
        # a valid change through `wxgate reload`
        config.write_text(base_text.replace("limit: 5", "limit: 7"))
        done = run_cli("reload", "--config", str(config))
        assert done.returncode == 0, done.stderr
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            now = json.loads(subprocess.run(["curl", "-s", base + "/healthz"], capture_output=True, text=True).stdout)[
                "config"
            ]
            if now != digest:
                break
            time.sleep(0.1)
        assert now != digest
        assert post(base + "/v1/demo/login", {"code": "x"})[0] == 400
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    events = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    refused_events = [e for e in events if e["event"] == "config_reload_refused"]
    assert len(refused_events) == 1
    assert "limit" in refused_events[0]["error"]
    assert next(e for e in events if e["event"] == "config_reloaded")["previous"] == digest
    assert not pid_file.exists()


def test_watch_config_reloads_on_change(tmp_path: Path) -> None:
    config = tmp_path / "watched.yaml"
    text = CONFIG.replace("storage: {plugin: memory}", "storage: {plugin: memory}\nserver: {watch_config: true}")
    config.write_text(text)
    log = tmp_path / "gateway.log"  # read only if it exits at start

    def start(port: int) -> subprocess.Popen[str]:
        with log.open("w") as out:
            return subprocess.Popen(
                [WXGATE, "serve", "--config", str(config), "--port", str(port)],
                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, text=True,
            )  # fmt: skip

    proc, _, base = start_on_a_free_port(start, output=lambda _: log.read_text())
    try:

        def digest() -> str:
            out = subprocess.run(["curl", "-s", base + "/healthz"], capture_output=True, text=True).stdout
            return str(json.loads(out)["config"])

        before = digest()
        config.write_text(text.replace("limit: 5", "limit: 9"))
        deadline = time.monotonic() + 10
        while digest() == before:
            assert time.monotonic() < deadline, "the change was not picked up"
            time.sleep(0.2)
        config.write_text("apps: [broken")  # an invalid edit is refused; the running config stays
        time.sleep(2.5)
        assert digest() != before
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
