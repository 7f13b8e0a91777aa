"""The deployment kit in deploy/, checked by the programs it is written for: Debian's nginx in
front of a real gateway, promtool on the Prometheus files, systemd-analyze on the unit, and the
Grafana dashboard's queries against the metrics the gateway exports.

`make test` installs those programs (`make deploy-deps`) when it runs as root; elsewhere a missing
one fails here with the apt-get line to run, never a silent skip.
"""

from __future__ import annotations

import http.client
import json
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dotenv
import pytest

from gateway.metrics import OUTBOX_AGE, Metrics
from tests.helpers import ROOT, WXGATE, free_port, post, start_on_a_free_port

DEPLOY = ROOT / "deploy"
# the Debian package that brings each program (see the Makefile's deploy-deps)
PACKAGES = {"nginx": "nginx", "promtool": "prometheus", "systemd-analyze": "systemd", "ss": "iproute2"}


def program(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if found is None:
        pytest.fail(
            f"{name} is not installed: run `apt-get install -y {PACKAGES[name]}` (or `make deploy-deps` as root)"
        )
    return found


def substitute(text: str, old: str, new: str) -> str:
    """``old`` must be in the shipped file exactly once: the test fails when the file changes shape."""
    assert text.count(old) == 1, f"expected {old!r} once in the shipped file"
    return text.replace(old, new)


# --- nginx in front of a real gateway --------------------------------------------------------

LOAD_BALANCER = "127.0.0.2"  # a trusted hop in front of nginx (set_real_ip_from)
STRANGER = "127.0.0.3"  # any other client


class Site:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.gateway_port = 0  # each chosen at its start
        self.nginx_port = 0
        self.gateway: subprocess.Popen[str] | None = None
        self.nginx: subprocess.Popen[str] | None = None
        self.gateway_log = ""

    def start_gateway(self) -> None:
        config = self.root / "gateway.yaml"
        config.write_text(
            "server:\n  log_format: json\n  trusted_proxies: [127.0.0.1/32]   # nginx, on this host\n"
            "storage: {plugin: memory}\n"
            "pipelines:\n  login: [code2session, issue_session]\n"
            "apps:\n  demo: {appid: wx0000000000demo0, secret: s, upstream: sandbox}\n"
        )
        self.gateway, self.gateway_port, _ = start_on_a_free_port(
            lambda port: subprocess.Popen(
                [WXGATE, "serve", "--config", str(config), "--port", str(port)],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )

    def stop_gateway(self) -> list[dict[str, Any]]:
        assert self.gateway is not None
        self.gateway.send_signal(signal.SIGTERM)
        out, _ = self.gateway.communicate(timeout=30)
        self.gateway_log += out
        return [json.loads(line) for line in out.splitlines() if line.startswith("{")]

    def start_nginx(self) -> None:
        error_log = self.root / "error.log"

        def start(port: int) -> subprocess.Popen[str]:
            args, checked = check_nginx(self.root, [our_site(port, self.gateway_port)])
            assert checked.returncode == 0, checked.stderr
            error_log.write_text("")  # what this start writes, nothing of an earlier one
            return subprocess.Popen([*args, "-g", "daemon off;"], stderr=subprocess.PIPE, text=True)

        # its bind() fails (after retrying 2.5 s) with "(98: Address already in use)"
        self.nginx, self.nginx_port, _ = start_on_a_free_port(
            start, "/v1/demo/nothing", output=lambda _: error_log.read_text()
        )

    def stop(self) -> None:
        for proc in (self.nginx, self.gateway):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.communicate(timeout=30)


def our_site(nginx_port: int, gateway_port: int) -> str:
    """deploy/nginx/wxgate.conf on test ports, the load balancer in front of it on LOAD_BALANCER."""
    site = (DEPLOY / "nginx" / "wxgate.conf").read_text()
    site = substitute(site, "listen 80 default_server;", f"listen 127.0.0.1:{nginx_port} default_server;")
    site = substitute(site, "server 127.0.0.1:8080;", f"server 127.0.0.1:{gateway_port};")
    return substitute(site, "set_real_ip_from 10.0.0.0/8;", f"set_real_ip_from {LOAD_BALANCER}/32;")


# Debian's /etc/nginx/sites-enabled/default (package nginx, comments left out), which an
# operator finds beside the site they add.
DEBIAN_DEFAULT_SITE = """\
server {
    listen 80 default_server;
    listen [::]:80 default_server;
    root /var/www/html;
    index index.html index.htm index.nginx-debian.html;
    server_name _;
    location / {
        try_files $uri $uri/ =404;
    }
}
"""


def check_nginx(root: Path, sites: list[str]) -> tuple[list[str], subprocess.CompletedProcess[str]]:
    """An nginx.conf in ``root`` including ``sites`` in order (as sites-enabled/* would), checked
    with ``nginx -t``: the command line to start it, and the check's result."""
    temp = root / "temp"
    temp.mkdir(exist_ok=True)
    temp.chmod(0o777)  # nginx's workers run as nobody under root
    includes = ""
    for i, text in enumerate(sites):
        (root / f"site{i}.conf").write_text(text)
        includes += f"  include {root}/site{i}.conf;\n"
    (root / "nginx.conf").write_text(
        f"worker_processes 1;\npid {root}/nginx.pid;\nerror_log {root}/error.log;\n"
        "events { worker_connections 64; }\n"
        "http {\n  access_log off;\n"
        + "".join(
            f"  {kind}_temp_path {temp}/{kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        + includes
        + "}\n"
    )
    args = [program("nginx"), "-p", str(root), "-c", str(root / "nginx.conf"), "-e", str(root / "error.log")]
    return args, subprocess.run([*args, "-t"], capture_output=True, text=True, timeout=30)


def request(
    port: int,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    source: str = "127.0.0.1",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0))
    try:
        payload = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, payload, {"Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    program("nginx")
    program("ss")
    served = Site(tmp_path)
    try:
        served.start_gateway()
        served.start_nginx()
        yield served
    finally:
        served.stop()


def upstream_connections(site: Site) -> int:
    """Established connections nginx holds to the gateway's port (the gateway's own, to the sandbox
    it serves on the same port, are not counted)."""
    out = subprocess.run(
        [program("ss"), "-Htnp", "state", "established", "dst", f"127.0.0.1:{site.gateway_port}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sum(1 for line in out.splitlines() if '"nginx"' in line)


def test_nginx_passes_the_real_client_and_keeps_upstream_connections_alive(site: Site) -> None:
    gateway, nginx = site.gateway_port, site.nginx_port
    # 1. a client behind the trusted load balancer: nginx's realip takes it from X-Forwarded-For
    trusted = request(
        nginx, "POST", "/v1/demo/login", {"code": "c1"}, LOAD_BALANCER, {"X-Forwarded-For": "203.0.113.7"}
    )
    # 2. a stranger naming an address: nginx ignores its header, the gateway sees the stranger
    forged = request(nginx, "POST", "/v1/demo/login", {"code": "c2"}, STRANGER, {"X-Forwarded-For": "198.51.100.9"})
    # 3. the same straight to the gateway: not a trusted proxy, so its headers are ignored
    direct = request(
        gateway,
        "POST",
        "/v1/demo/login",
        {"code": "c3"},
        STRANGER,
        {"X-Forwarded-For": "198.51.100.9", "X-Real-Ip": "198.51.100.9"},
    )
    for status, headers, body in (trusted, forged, direct):
        assert status == 400, body  # the sandbox refuses made-up codes: the gateway answered
        assert json.loads(body)["error"]["code"] == "invalid_code"
        assert "server" not in headers or "TornadoServer" not in headers["server"]
    # a real login through nginx, several requests on one kept-alive upstream connection
    for i in range(4):
        _, device = post(f"http://127.0.0.1:{gateway}/_sandbox/demo/wx.login", {"user": f"nginx-{i}"})
        status, _, body = request(nginx, "POST", "/v1/demo/login", {"code": device["code"]})
        assert status == 200, body
    assert upstream_connections(site) == 1
    # operations paths are not on the public site
    for path in ("/metrics", "/readyz", "/healthz", "/admin/", "/_sandbox/demo/wx.login"):
        status, headers, body = request(nginx, "GET", path)
        assert (status, headers["content-type"]) == (404, "application/json"), path
        assert json.loads(body)["error"]["code"] == "not_found"
    # default_server: a request for any host name (the mini program's domain) is ours
    status, headers, body = request(
        nginx, "POST", "/v1/demo/login", {"code": "c4"}, headers={"Host": "api.example.com"}
    )
    assert (status, json.loads(body)["error"]["code"]) == (400, "invalid_code"), body
    events = site.stop_gateway()
    clients = [e["client_ip"] for e in events if e.get("event") == "request" and e.get("flow") == "login"]
    assert clients[:3] == ["203.0.113.7", STRANGER, STRANGER], site.gateway_log


def test_nginx_answers_json_when_the_gateway_is_down(site: Site) -> None:
    site.stop_gateway()
    status, headers, body = request(site.nginx_port, "POST", "/v1/demo/login", {"code": "x"})
    assert status == 502
    assert headers["content-type"] == "application/json"
    assert headers["retry-after"] == "5"
    error = json.loads(body)["error"]
    assert (error["code"], error["retryable"]) == ("gateway_unavailable", True)
    too_big = request(site.nginx_port, "POST", "/v1/demo/login", {"code": "x" * 70_000})
    assert too_big[0] == 413
    assert json.loads(too_big[2])["error"]["code"] == "body_too_large"


def test_debians_default_site_cannot_silently_take_our_requests(tmp_path: Path) -> None:
    """Beside Debian's default site (default_server on the same port), ours is not quietly second,
    which would answer every request with nginx's HTML 404: nginx -t refuses the pair, naming the
    clash, until the default site is removed as the site's header says."""
    port = free_port()
    debian = DEBIAN_DEFAULT_SITE.replace("listen 80 ", f"listen 127.0.0.1:{port} ").replace(
        "    listen [::]:80 default_server;\n", ""
    )
    for order in ([debian, our_site(port, free_port())], [our_site(port, free_port()), debian]):
        _, checked = check_nginx(tmp_path, order)
        assert checked.returncode != 0, "nginx accepted our site beside Debian's default: one of them loses"
        assert "duplicate default server" in checked.stderr, checked.stderr
    assert "rm /etc/nginx/sites-enabled/default" in (DEPLOY / "nginx" / "wxgate.conf").read_text()
    _, alone = check_nginx(tmp_path, [our_site(port, free_port())])
    assert alone.returncode == 0, alone.stderr


# --- Prometheus, systemd ---------------------------------------------------------------------


def test_prometheus_config_and_rules_pass_promtool(tmp_path: Path) -> None:
    promtool = program("promtool")
    for name in ("prometheus.yml", "wxgate-alerts.yml"):
        shutil.copy(DEPLOY / "prometheus" / name, tmp_path / name)
    token = tmp_path / "admin-token"
    token.write_text("a-token\n")
    config = tmp_path / "prometheus.yml"
    config.write_text(substitute(config.read_text(), "/etc/prometheus/wxgate-admin-token", str(token)))
    checked = subprocess.run([promtool, "check", "config", str(config)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 1 rule files found" in checked.stdout
    rules = subprocess.run(
        [promtool, "check", "rules", str(DEPLOY / "prometheus" / "wxgate-alerts.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert rules.returncode == 0, rules.stdout + rules.stderr
    # the alerts the operator needs, each on a metric the gateway exports
    alerts = (DEPLOY / "prometheus" / "wxgate-alerts.yml").read_text()
    for needed in (
        'up{job="wxgate"}',
        'status=~"5.."',
        'status="dead"',
        "wxgate_upstream_circuit_open",
        "wxgate_storage_up",
    ):
        assert needed in alerts
    assert metric_names(alerts) <= exported_metrics()


def test_systemd_unit_passes_systemd_analyze(tmp_path: Path) -> None:
    analyze = program("systemd-analyze")
    text = (DEPLOY / "systemd" / "wxgate.service").read_text()
    # verify wants the binary to exist: the one this suite runs stands in for /opt/wxgate's
    unit = tmp_path / "wxgate.service"
    unit.write_text(substitute(text, "ExecStart=/opt/wxgate/bin/wxgate", f"ExecStart={WXGATE}"))
    checked = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stderr
    # a directive it does not understand is only a warning to it, but a mistake here
    assert str(unit) not in checked.stderr, checked.stderr
    service = dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["Restart"] == "on-failure"
    assert service["EnvironmentFile"].startswith("/etc/wxgate/")
    assert service["User"] not in ("root", "0")
    # everything the service's environment holds is in that file, which the CLI reads with --env-file
    assert "Environment" not in service, "set variables in wxgate.env, where `--env-file` finds them too"


def test_env_example_lists_the_variables_of_the_production_example() -> None:
    """deploy/systemd/wxgate.env.example sets every ${VAR} config/production.example.yaml needs
    (and no variable it does not read), plus WXGATE_CONFIG naming the file, so that the service and
    `wxgate --env-file` both find the configuration and every variable of it."""
    from gateway.config import _ENV_REF

    text = (ROOT / "config" / "production.example.yaml").read_text()
    production = re.sub(r"(?m)(^|\s)#.*$", "", text)  # what the comments mention is not read
    read = {m.group(1) for m in _ENV_REF.finditer(production)}
    required = {m.group(1) for m in _ENV_REF.finditer(production) if m.group(2) is None}
    assert {"SHOP_APPID", "WXGATE_PHONE_HASH_KEY"} <= required  # the pattern found the file's variables
    example = DEPLOY / "systemd" / "wxgate.env.example"
    values = dotenv.dotenv_values(example)
    missing = sorted(required - set(values))
    assert not missing, f"{example.name} does not set {missing}, which config/production.example.yaml needs"
    unread = sorted(set(values) - read - {"WXGATE_CONFIG"})
    assert not unread, f"{example.name} sets {unread}, which config/production.example.yaml does not read"
    assert values["WXGATE_CONFIG"] == "/etc/wxgate/wxgate.yaml"
    assert "0640" in example.read_text()


# --- Grafana ---------------------------------------------------------------------------------


def exported_metrics() -> set[str]:
    """Every sample name the gateway's registry can export, plus Prometheus' own ``up``."""
    names = {"up", OUTBOX_AGE}
    for family in Metrics().registry.collect():
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names |= {family.name + suffix for suffix in ("_bucket", "_sum", "_count")}
        else:
            names.add(family.name)
    return names


def metric_names(text: str) -> set[str]:
    return set(re.findall(r"\b(wxgate_[a-z_]+)", text))


def test_grafana_dashboard_queries_only_exported_metrics() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "wxgate-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    named = set().union(*(metric_names(e) for e in exprs))
    assert named, "the dashboard queries nothing"
    unknown = named - exported_metrics()
    assert not unknown, f"the dashboard queries metrics the gateway does not export: {unknown}"
    titles = " ".join(panel["title"].lower() for panel in dashboard["panels"])
    for subject in ("by flow", "latency", "status", "step", "outbox"):
        assert subject in titles
    for needed in (
        "wxgate_requests_total",
        "wxgate_request_duration_seconds_bucket",
        "wxgate_step_duration_seconds_bucket",
        "wxgate_outbox_events",
    ):
        assert needed in named
