"""Several gateway processes against one MongoDB wire-protocol server and one upstream.

Real processes on real ports: the standalone sandbox (`wxgate sandbox`) plays WeChat
for all of them, so access-token refreshes are counted where WeChat would count them.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from gateway.sandbox.world import phone_for
from tests.helpers import ROOT, WXGATE, free_port, post, run_cli, start_on_a_free_port, wait_until_up
from tests.test_storage_contract import STORAGE_KEY


def config_text(mongo_uri: str, sandbox_port: int) -> str:
    return f"""
server: {{log_format: json}}
storage:
  plugin: mongo
  options: {{uri: "{mongo_uri}", database: "mp{uuid.uuid4().hex[:10]}", encryption_key: "{STORAGE_KEY}"}}
pipelines:
  login: [code2session, persist_user, issue_session]
  phone: [check_session, {{decrypt: {{kind: phone}}}}, watermark, mask_guard, persist_phone, respond]
  phone_code: [check_session, phone_code, watermark, mask_guard, persist_phone, respond]
apps:
  shop:
    appid: wx00000000000shop
    secret: shop-secret-1234
    upstream: http://127.0.0.1:{sandbox_port}
"""


class Cluster:
    def __init__(self, tmp_path: Path, mongo_uri: str) -> None:
        self.config = tmp_path / "cluster.yaml"
        self.procs: list[subprocess.Popen[str]] = []
        self.tmp_path = tmp_path
        self.logs: dict[int, Path] = {}
        self.admin_url = ""  # with gateway(admin=...)

        def start_sandbox(port: int) -> subprocess.Popen[str]:
            self.config.write_text(config_text(mongo_uri, port))  # the apps' upstream: this sandbox
            return self.start([WXGATE, "sandbox", "--config", str(self.config), "--port", str(port)])

        _, self.sandbox_port, self.sandbox_url = start_on_a_free_port(
            start_sandbox, "/_sandbox/_stats", output=self.output
        )

    def start(self, command: list[str]) -> subprocess.Popen[str]:
        # a file, not a pipe nobody reads until the end: a full pipe would stop the logging workers
        log = self.tmp_path / f"process-{len(self.procs)}.log"
        with log.open("w") as out:
            proc = subprocess.Popen(
                command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, text=True, start_new_session=True
            )
        self.procs.append(proc)
        self.logs[proc.pid] = log
        return proc

    def output(self, proc: subprocess.Popen[str]) -> str:
        return self.logs[proc.pid].read_text()

    def gateway(self, *extra: str, admin: str | None = None) -> str:
        """A `wxgate serve` of the cluster's file, serving: its URL. ``admin``: the ``server.admin``
        options but the port (``token: ...``): an admin listener too, on a port of its own chosen
        with the public one's, at ``self.admin_url``."""

        def start(port: int) -> subprocess.Popen[str]:
            if admin is not None:
                admin_port = free_port()
                text, found = re.subn(
                    r"^server: \{log_format: json.*$",
                    f"server: {{log_format: json, admin: {{port: {admin_port}, {admin}}}}}",
                    self.config.read_text(),
                    count=1,
                    flags=re.MULTILINE,
                )
                assert found == 1, "the file has no `server: {log_format: json}` line"
                self.config.write_text(text)
                self.admin_url = f"http://127.0.0.1:{admin_port}"
            return self.start([WXGATE, "serve", "--config", str(self.config), "--port", str(port), *extra])

        return start_on_a_free_port(start, output=self.output).url

    def stats(self) -> dict[str, int]:
        with urllib.request.urlopen(self.sandbox_url + "/_sandbox/_stats", timeout=5) as response:
            calls: dict[str, int] = json.loads(response.read())["calls"]
            return calls

    def device(self, action: str, user: str) -> dict[str, Any]:
        status, body = post(f"{self.sandbox_url}/_sandbox/shop/{action}", {"user": user})
        assert status == 200, body
        return body

    def stop(self) -> list[str]:
        outputs = []
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
            outputs.append(self.output(proc))
        return outputs


@pytest.fixture
def cluster(tmp_path: Path, mongo_uri: str) -> Iterator[Cluster]:
    running = Cluster(tmp_path, mongo_uri)
    yield running
    running.stop()


def login(cluster: Cluster, gateway: str, user: str) -> str:
    code = cluster.device("wx.login", user)["code"]
    status, body = post(gateway + "/v1/shop/login", {"code": code})
    assert status == 200, body
    return str(body["token"])


def test_login_on_one_process_phone_on_another(cluster: Cluster) -> None:
    gw1, gw2 = cluster.gateway(), cluster.gateway()
    token = login(cluster, gw1, "ann")
    device = cluster.device("getPhoneNumber", "ann")
    status, body = post(gw2 + "/v1/shop/phone", {"encryptedData": device["encryptedData"], "iv": device["iv"]}, token)
    assert status == 200, body
    assert body["purePhoneNumber"] == phone_for("ann")
    # the session-key race recovered across processes: data from before a second login
    device = cluster.device("getPhoneNumber", "ann")
    login(cluster, gw2, "ann")
    status, body = post(gw1 + "/v1/shop/phone", {"encryptedData": device["encryptedData"], "iv": device["iv"]}, token)
    assert status == 200, body


def test_one_access_token_refresh_for_all_processes(cluster: Cluster) -> None:
    gateways = [cluster.gateway(), cluster.gateway()]
    tokens = {user: login(cluster, gateways[i % 2], user) for i, user in enumerate(f"u{i}" for i in range(8))}
    requests = []
    for round_ in range(4):
        for i, (user, token) in enumerate(tokens.items()):
            code = cluster.device("getPhoneNumber", user)["code"]
            requests.append((gateways[(i + round_) % 2], user, token, code))
    assert cluster.stats().get("stable_token", 0) == 0

    def call(item: tuple[str, str, str, str]) -> tuple[int, dict[str, Any], str]:
        gateway, user, token, code = item
        status, body = post(gateway + "/v1/shop/phone", {"code": code}, token)
        return status, body, user

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(call, requests))
    assert len(results) == 32
    for status, body, user in results:
        assert status == 200, body
        assert body["purePhoneNumber"] == phone_for(user)
    assert cluster.stats()["stable_token"] == 1
    assert cluster.stats()["getuserphonenumber"] == 32

    # Another server uses the old /cgi-bin/token, which invalidates ours (the classic 40001):
    # each process resends once, and between them they fetch one new token.
    with urllib.request.urlopen(
        cluster.sandbox_url
        + "/cgi-bin/token?grant_type=client_credential&appid=wx00000000000shop&secret=shop-secret-1234",
        timeout=5,
    ) as response:
        assert "access_token" in json.loads(response.read())
    for gateway in gateways:
        code = cluster.device("getPhoneNumber", "u0")["code"]
        status, body = post(gateway + "/v1/shop/phone", {"code": code}, tokens["u0"])
        assert status == 200, body
    assert cluster.stats()["stable_token"] == 2


def test_prefork_workers_share_the_port(cluster: Cluster) -> None:
    gateway = cluster.gateway("--processes", "2")
    pids = set()
    for _ in range(60):
        with urllib.request.urlopen(gateway + "/healthz", timeout=5) as response:
            pids.add(json.loads(response.read())["pid"])
        if len(pids) == 2:
            break
    parent = cluster.procs[-1]
    children = subprocess.run(["pgrep", "-P", str(parent.pid)], capture_output=True, text=True).stdout.split()
    assert len(children) == 2
    assert pids <= {int(pid) for pid in children}
    token = login(cluster, gateway, "pre")
    code = cluster.device("getPhoneNumber", "pre")["code"]
    assert post(gateway + "/v1/shop/phone", {"code": code}, token)[0] == 200
    parent.send_signal(signal.SIGTERM)
    parent.wait(timeout=30)
    out = cluster.output(parent)
    assert parent.returncode == 0, out
    assert out.count('"gateway_stopped"') == 2
    assert subprocess.run(["pgrep", "-P", str(parent.pid)], capture_output=True).returncode == 1


def test_prefork_spreads_a_burst_of_keep_alive_connections_over_both_workers(cluster: Cluster) -> None:
    """Was: one shared socket, and the first worker to wake accepted every connection
    of a burst, so a load of keep-alive clients ran on one core. Each worker now has its
    own SO_REUSEPORT socket."""
    gateway = cluster.gateway("--processes", "2")
    port = int(gateway.rsplit(":", 1)[1])
    # a burst, as a load tool opens it: every connect is sent before any is accepted
    sockets = [socket.socket() for _ in range(24)]
    try:
        for sock in sockets:
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
        pids = []
        for sock in sockets:
            sock.setblocking(True)
            sock.settimeout(5)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = b""
            while not answer.endswith(b"}"):
                chunk = sock.recv(4096)
                assert chunk, answer
                answer += chunk
            pids.append(json.loads(answer.split(b"\r\n\r\n", 1)[1])["pid"])
    finally:
        for sock in sockets:
            sock.close()
    per_worker = sorted(pids.count(pid) for pid in set(pids))
    assert len(per_worker) == 2, per_worker
    assert per_worker[0] >= 3, per_worker  # 24 hashed over 2 sockets: 2 or fewer on one is ~4e-5


def test_prefork_refuses_a_port_another_gateway_listens_on(cluster: Cluster) -> None:
    gateway = cluster.gateway("--processes", "2")
    port = gateway.rsplit(":", 1)[1]
    second = subprocess.run(
        [WXGATE, "serve", "--config", str(cluster.config), "--port", port, "--processes", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert second.returncode == 1, second.stderr  # a runtime failure: the same file serves once the port is free
    assert "cannot listen on" in second.stderr


def test_prefork_refuses_the_mounted_sandbox() -> None:
    result = run_cli("serve", "--processes", "2", "--port", "0")
    assert result.returncode == 2
    assert "upstream: sandbox" in result.stderr
    assert "wxgate sandbox" in result.stderr


def answer(url: str, token: str, method: str) -> int:
    request = urllib.request.Request(url, b"" if method == "POST" else None, method=method)
    request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_logout_on_one_process_is_refused_by_the_other_at_once(cluster: Cluster) -> None:
    gw1, gw2 = cluster.gateway(), cluster.gateway()
    token = login(cluster, gw1, "lee")
    assert answer(gw2 + "/v1/shop/session", token, "GET") == 200  # gw2 has seen the session
    assert answer(gw1 + "/v1/shop/logout", token, "POST") == 204
    # no cache in gw2: the very next request there is refused
    assert answer(gw2 + "/v1/shop/session", token, "GET") == 401
    assert answer(gw2 + "/v1/shop/logout", token, "POST") == 401


def healthz_by_pid(gateway: str, tries: int = 80) -> dict[int, str]:
    """pid -> configuration digest, over enough new connections to reach every worker."""
    seen: dict[int, str] = {}
    for _ in range(tries):
        try:
            with urllib.request.urlopen(gateway + "/healthz", timeout=5) as response:
                body = json.loads(response.read())
        except OSError:
            continue  # queued on the socket of a worker just killed: reset
        seen[body["pid"]] = body["config"]
    return seen


def served_digests(gateway: str) -> set[str]:
    with urllib.request.urlopen(gateway + "/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        line.split('digest="', 1)[1].split('"', 1)[0]
        for line in text.splitlines()
        if line.startswith("wxgate_config_info{") and float(line.rsplit(" ", 1)[1]) == 1.0
    }


def wait_for(condition: Any, what: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_a_replaced_worker_serves_the_reloaded_configuration(cluster: Cluster) -> None:
    """Was: after a reload, a worker killed with -9 came back with the start-up file, and
    two configurations were served at once (logins answered 3600 and 7200)."""
    text = cluster.config.read_text()
    cluster.config.write_text(text.replace("issue_session]", "{issue_session: {ttl: 3600}}]"))
    gateway = cluster.gateway("--processes", "2")
    parent = cluster.procs[-1]
    started = healthz_by_pid(gateway)
    assert len(started) == 2
    first_digest = next(iter(started.values()))

    cluster.config.write_text(text.replace("issue_session]", "{issue_session: {ttl: 7200}}]"))
    parent.send_signal(signal.SIGHUP)
    wait_for(lambda: set(healthz_by_pid(gateway, 20).values()) - {first_digest}, "no worker reloaded")
    wait_for(lambda: first_digest not in healthz_by_pid(gateway).values(), "a worker kept the old file")
    reloaded = next(iter(healthz_by_pid(gateway).values()))

    victim = next(iter(started))
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: len(set(healthz_by_pid(gateway)) - set(started)) == 1, "no replacement worker")
    now = healthz_by_pid(gateway)
    assert victim not in now
    assert set(now.values()) == {reloaded}
    assert served_digests(gateway) == {reloaded}  # the dead worker's gauge is gone too
    expiries = set()
    for i in range(8):
        code = cluster.device("wx.login", f"r{i}")["code"]
        status, body = post(gateway + "/v1/shop/login", {"code": code})
        assert status == 200, body
        expiries.add(body["expires_in"])
    assert expiries == {7200}

    # the file is now invalid: a replacement runs what the others run, not the file
    cluster.config.write_text("apps: [not, valid]\n")
    refused_before = cluster.output(parent).count('"config_reload_refused"')
    parent.send_signal(signal.SIGHUP)
    # both workers have read the file and refused it (however slow a loaded machine is)
    wait_for(lambda: cluster.output(parent).count('"config_reload_refused"') >= refused_before + 2, "no refusal logged")
    victim = next(iter(now))
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: victim not in healthz_by_pid(gateway) and len(healthz_by_pid(gateway)) == 2, "no replacement")
    assert set(healthz_by_pid(gateway).values()) == {reloaded}
    assert served_digests(gateway) == {reloaded}
    with urllib.request.urlopen(gateway + "/metrics", timeout=5) as response:
        metrics = response.read().decode()
    # one line per worker, refusals apart: a sum over workers would hide which one refused
    assert 'wxgate_config_reloads_total{result="refused",worker="' in metrics
    assert metrics.count('wxgate_config_reloads_total{result="ok",worker="') == 2


def test_database_down_at_start_is_one_exit_with_the_cause(tmp_path: Path) -> None:
    """Was: 105 s of a crash loop, 101 worker_died lines, raw tracebacks, no cause."""
    closed = free_port()  # nothing listens there
    config = tmp_path / "down.yaml"
    config.write_text(
        config_text(f"mongodb://127.0.0.1:{closed}", free_port()).replace(
            'encryption_key: "', 'timeout_ms: 300, encryption_key: "'
        )
    )
    result = subprocess.run(
        [WXGATE, "serve", "--config", str(config), "--port", "0", "--processes", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "worker_died" not in result.stderr  # no worker was started
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("wxgate: The gateway's storage is unavailable. (mongo start:"), last
    assert f"127.0.0.1:{closed}" in last  # the driver's cause, naming the server


CRASHING_WORKERS = """
import sys
from gateway.errors import StorageUnavailable
from gateway.logs import configure_logging
from gateway.prefork import Supervision, WorkersFailing, run_workers

configure_logging("json")

def work(worker_id):
    raise StorageUnavailable(log_detail=f"mongo start: refused (worker {worker_id})")

try:
    run_workers(2, work, supervision=Supervision(backoff_initial=0.05))
except WorkersFailing as exc:
    print(f"stopped: {exc}")
    sys.exit(1)
"""


def test_workers_dying_at_start_stop_the_supervisor_with_their_error() -> None:
    result = subprocess.run(
        [sys.executable, "-c", CRASHING_WORKERS], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    events = [json.loads(line) for line in lines]  # every line is one JSON event: no traceback
    failed = [e for e in events if e["event"] == "worker_failed"]
    died = [e for e in events if e["event"] == "worker_died"]
    # 2 at start, each replaced (with a growing delay) until 5 deaths in a row
    assert len(died) == 5
    assert [e["quick_deaths"] for e in died] == [1, 2, 3, 4, 5]
    assert all("mongo start: refused" in e["error"] for e in died)
    assert 5 <= len(failed) <= 6  # the sixth may be killed before it logs
    assert [e["event"] for e in events].count("workers_failing") == 1
    assert result.stdout.startswith("stopped: The gateway's storage is unavailable. (mongo start: refused (worker")


def test_a_worker_killed_by_a_signal_died_of_that_signal() -> None:
    """SIGKILL (the OOM killer, say) leaves the worker no time to write its error: the status says it."""
    script = CRASHING_WORKERS.replace(
        '    raise StorageUnavailable(log_detail=f"mongo start: refused (worker {worker_id})")',
        "    import os, signal\n    os.kill(os.getpid(), signal.SIGKILL)",
    )
    assert script != CRASHING_WORKERS
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr
    died = [e for e in map(json.loads, result.stderr.splitlines()) if e["event"] == "worker_died"]
    assert len(died) == 5
    assert {e["error"] for e in died} == {"killed by signal 9 (SIGKILL)"}
    assert result.stdout.strip() == "stopped: killed by signal 9 (SIGKILL)"


def test_the_admin_listener_reports_every_worker(cluster: Cluster) -> None:
    token = "admin-token-0123456789abcdef"
    gateway = cluster.gateway("--processes", "2", admin=f"token: {token}")
    parent = cluster.procs[-1]
    admin = cluster.admin_url
    wait_until_up(admin + "/healthz", parent)
    for i in range(12):
        login(cluster, gateway, f"m{i}")
    request = urllib.request.Request(admin + "/metrics", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        text = response.read().decode()
    login_pids = {
        event["pid"]
        for event in map(json.loads, filter(None, cluster.output(parent).splitlines()))
        if event.get("event") == "request" and event.get("path") == "/v1/shop/login"
    }
    assert len(login_pids) == 2  # both workers answered logins...
    assert 'wxgate_requests_total{app="shop",flow="login",status="200"} 12.0' in text  # ...and one scrape counts all
    assert "wxgate_storage_up 1.0" in text
    with pytest.raises(urllib.error.HTTPError) as public:
        urllib.request.urlopen(gateway + "/metrics", timeout=5)
    assert public.value.code == 404
