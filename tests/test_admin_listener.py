"""server.admin: the operations endpoints on a socket of their own, with the token rules, on
a real `wxgate serve`; and no Server header on any answer of either port."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.config import parse_config
from gateway.errors import ConfigError
from tests.helpers import ROOT, WXGATE, free_port, start_on_a_free_port, wait_until_up

TOKEN = "admin-token-0123456789abcdef"
APPS = (
    "pipelines: {login: [code2session, issue_session]}\n"
    "apps:\n  demo: {appid: wx0000000000demo0, secret: demo-secret-123, upstream: sandbox}\n"
)


def test_a_non_loopback_admin_bind_needs_a_token() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("server:\n  port: 8080\n  admin: {host: 0.0.0.0, port: 8081}\n" + APPS, "gw.yaml")
    message = str(caught.value)
    assert message.startswith("gw.yaml:3: server.admin:")
    assert "no token is set" in message
    assert "WXGATE_ADMIN_TOKEN" in message
    # with a token it is accepted; on loopback none is needed
    parse_config(f"server:\n  admin: {{host: 0.0.0.0, port: 8081, token: {TOKEN}}}\n" + APPS, "gw.yaml")
    parse_config("server:\n  admin: {port: 8081}\n" + APPS, "gw.yaml")


def test_a_short_admin_token_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"gw.yaml:2: server.admin: the admin token must be at least 16"):
        parse_config("server:\n  admin: {port: 8081, token: short}\n" + APPS, "gw.yaml")


@dataclass
class Ports:
    public: str
    admin: str
    proc: subprocess.Popen[str]


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, object]:
        parsed: dict[str, object] = json.loads(self.body)
        return parsed


def fetch(url: str, *, token: str | None = None, method: str = "GET", body: bytes | None = None) -> Answer:
    request = urllib.request.Request(url, body, method=method)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    if body is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return Answer(response.status, {k.lower(): v for k, v in response.headers.items()}, response.read())
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read())


def serve(tmp_path: Path, admin: str, *extra: str) -> Iterator[Ports]:
    """The gateway with ``server.admin: {port: <one of its own>, <admin>}``, once both ports serve."""
    config = tmp_path / "gw.yaml"
    log_file = tmp_path / "gateway.log"
    admin_url = ""

    def start(port: int) -> subprocess.Popen[str]:
        nonlocal admin_url
        admin_port = free_port()  # chosen anew with the public one, should either be taken
        admin_url = f"http://127.0.0.1:{admin_port}"
        config.write_text(
            f"server: {{log_format: json, admin: {{port: {admin_port}{admin}}}}}\nstorage: {{plugin: memory}}\n" + APPS
        )
        with log_file.open("w") as log:  # the child keeps its own handle
            return subprocess.Popen(
                [WXGATE, "serve", "--config", str(config), "--port", str(port), *extra],
                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                env={**os.environ, "WXGATE_ADMIN_TOKEN": TOKEN},
            )  # fmt: skip

    proc, _, public = start_on_a_free_port(start, "/openapi.json", output=lambda _: log_file.read_text())
    ports = Ports(public, admin_url, proc)
    try:
        wait_until_up(ports.admin + "/healthz", proc)  # bound before the public port serves
        yield ports
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Ports]:
    yield from serve(tmp_path, ", token: '${WXGATE_ADMIN_TOKEN}'")


def test_operations_paths_move_to_the_admin_port(gateway: Ports) -> None:
    for path in ("/metrics", "/readyz", "/healthz"):
        answer = fetch(gateway.public + path)
        assert answer.status == 404, path
        assert b'"code":"not_found"' in answer.body
    assert fetch(gateway.public + "/openapi.json").status == 200
    # the public port still serves flows; the admin port does not
    assert fetch(gateway.public + "/v1/demo/login", method="POST", body=b'{"code":"x"}').status == 400
    assert fetch(gateway.admin + "/v1/demo/login", method="POST", body=b'{"code":"x"}').status == 404


def test_probes_need_no_token_and_metrics_need_it(gateway: Ports) -> None:
    health = fetch(gateway.admin + "/healthz")
    assert (health.status, health.json()["status"]) == (200, "ok")
    assert fetch(gateway.admin + "/readyz").status == 200
    for token in (None, "wrong-token-of-some-length", TOKEN[:-1], TOKEN + "x"):
        refused = fetch(gateway.admin + "/metrics", token=token)
        assert refused.status == 401, token
        assert TOKEN not in refused.body.decode()
        error = refused.json()["error"]
        assert isinstance(error, dict)
        assert error["code"] == "admin_token_required"
        # a wrong token is told apart from none at all
        wanted = "This admin endpoint needs the admin token." if token is None else "The admin token was not accepted."
        assert error["message"] == wanted, token
        assert refused.headers["www-authenticate"] == 'Bearer realm="wxgate-admin"'
    scraped = fetch(gateway.admin + "/metrics", token=TOKEN)
    assert scraped.status == 200
    text = scraped.body.decode()
    assert "wxgate_storage_up 1.0" in text
    assert 'wxgate_upstream_circuit_open{app="demo"} 0.0' in text
    assert "wxgate_config_info{" in text


def test_no_server_header_on_either_port(gateway: Ports) -> None:
    answers = [
        fetch(gateway.public + "/v1/demo/login", method="POST", body=b'{"code":"x"}'),  # a flow's error
        fetch(gateway.public + "/_sandbox/demo/wx.login", method="POST", body=b'{"user":"ann"}'),
        fetch(gateway.public + "/openapi.json"),
        fetch(gateway.public + "/nowhere"),
        fetch(gateway.public + "/metrics", method="POST", body=b"x" * 70_000),  # 413, before the handler
        fetch(gateway.admin + "/healthz"),
        fetch(gateway.admin + "/metrics"),
        fetch(gateway.admin + "/metrics", token=TOKEN),
        fetch(gateway.admin + "/nowhere"),
    ]
    assert [a.status for a in answers] == [400, 200, 200, 404, 413, 200, 401, 200, 404]
    for answer in answers:
        assert "server" not in answer.headers, answer.headers


def test_without_a_token_metrics_are_open_on_a_loopback_admin_port(tmp_path: Path) -> None:
    for ports in serve(tmp_path, ""):
        admin = ports.admin
        assert fetch(admin + "/metrics").status == 200
        assert fetch(ports.public + "/metrics").status == 404
        assert fetch(admin + "/admin/").status == 404
    # the start-up line says that the console is off, and why
    assert admin_listening(tmp_path)["console"] == "off (no server.admin.token)"


def test_the_start_up_line_names_the_console_when_a_token_is_set(gateway: Ports, tmp_path: Path) -> None:
    gateway.proc.send_signal(signal.SIGTERM)
    gateway.proc.wait(timeout=20)
    line = admin_listening(tmp_path)
    assert (line["url"], line["console"]) == (gateway.admin, gateway.admin + "/admin/")
    assert TOKEN not in (tmp_path / "gateway.log").read_text()


def admin_listening(tmp_path: Path) -> dict[str, object]:
    lines = (tmp_path / "gateway.log").read_text().splitlines()
    found = [json.loads(line) for line in lines if '"admin_listening"' in line]
    assert found, lines
    event: dict[str, object] = found[0]
    return event
