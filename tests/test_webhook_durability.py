"""At least once, across crashes: a gateway killed with SIGKILL before or during a
delivery loses no event. Real processes: gateway, sandbox, MongoDB wire server, receiver."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import WXGATE, post
from tests.test_multiprocess import Cluster
from tests.test_storage_contract import STORAGE_KEY
from tests.webhook_receiver import Receiver


def wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


@pytest.fixture
def setup(tmp_path: Path, mongo_uri: str) -> Iterator[tuple[Cluster, Receiver]]:
    cluster = Cluster(tmp_path, mongo_uri)
    receiver = Receiver()
    cluster.config.write_text(
        f"""
server: {{log_format: json}}
storage:
  plugin: mongo
  options: {{uri: "{mongo_uri}", database: "wh{uuid.uuid4().hex[:10]}", encryption_key: "{STORAGE_KEY}"}}
webhooks:
  poll_interval: 0.1
  lease_seconds: 1
  backoff_initial: 0.1
  backoff_max: 0.5
  endpoints:
    - {{name: crm, url: "{receiver.url}", secret: "{receiver.secret}"}}
pipelines:
  login: [code2session, persist_user, issue_session, {{webhook: {{event: user.login}}}}]
apps:
  shop: {{appid: wx00000000000shop, secret: shop-secret-1234, upstream: "{cluster.sandbox_url}"}}
"""
    )
    yield cluster, receiver
    receiver.stop()
    cluster.stop()


def start_gateway(cluster: Cluster) -> tuple[str, subprocess.Popen[str]]:
    url = cluster.gateway()
    return url, cluster.procs[-1]


def kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)


def login(cluster: Cluster, gateway: str, user: str) -> None:
    code = cluster.device("wx.login", user)["code"]
    status, body = post(gateway + "/v1/shop/login", {"code": code})
    assert status == 200, body


def test_killed_before_delivery_then_delivered_by_the_next_start(setup: tuple[Cluster, Receiver]) -> None:
    cluster, receiver = setup  # the receiver is down: nothing can be delivered yet
    gateway, proc = start_gateway(cluster)
    for user in ("k1", "k2", "k3"):
        login(cluster, gateway, user)
    kill(proc)
    receiver.start()
    time.sleep(0.5)
    assert receiver.arrived == 0  # nobody is left to deliver
    start_gateway(cluster)
    wait_for(lambda: len(receiver.delivered()) >= 3)
    events = receiver.delivered()
    assert {e["type"] for e in events} == {"user.login"}
    assert len({e["id"] for e in events}) == 3


def test_killed_during_delivery_then_redelivered_with_the_same_id(setup: tuple[Cluster, Receiver]) -> None:
    cluster, receiver = setup
    receiver.delay = 2.0  # the receiver is slow: the gateway dies while it waits
    receiver.start()
    gateway, proc = start_gateway(cluster)
    login(cluster, gateway, "mid")
    wait_for(lambda: receiver.arrived == 1)
    kill(proc)
    receiver.delay = 0.0
    start_gateway(cluster)  # the dead worker's lease (1 s) runs out; this one delivers again
    wait_for(lambda: len(receiver.received) >= 2)
    ids = [json.loads(call["body"])["id"] for call in receiver.received]
    assert len(set(ids)) == 1
    assert all(receiver.verify(call) for call in receiver.received)


def test_events_cli_lists_retries_and_purges(setup: tuple[Cluster, Receiver]) -> None:
    cluster, receiver = setup
    receiver.script = [400]  # refused: dead-lettered at once
    receiver.start()
    gateway, _proc = start_gateway(cluster)
    login(cluster, gateway, "cli")
    config = str(cluster.config)

    def events(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([WXGATE, "events", "--config", config, *args], capture_output=True, text=True, timeout=60)

    wait_for(lambda: '"dead"' in events("list", "--json").stdout)
    (row,) = [json.loads(line) for line in events("list", "--json", "--status", "dead").stdout.splitlines()]
    assert (row["type"], row["endpoint"], row["attempts"]) == ("user.login", "crm", 1)
    assert row["last_error"] == "HTTP 400: the receiver refused it"
    retried = events("retry", row["id"])
    assert retried.returncode == 0
    assert retried.stdout.strip() == "1 dead-lettered events queued again"
    wait_for(lambda: len(receiver.delivered()) == 1)
    # delivered now, and an id that names nothing: neither is queued again, and the exit status says so
    again = events("retry", row["id"], "no-such-event", row["id"])
    assert again.returncode == 1
    assert again.stdout.strip() == "0 dead-lettered events queued again"
    assert again.stderr.startswith("wxgate events retry: 2 of the 2 named events were not queued again")
    assert events("purge", "--status", "delivered", "--older-than", "1h").stdout.strip() == "0 delivered events purged"
    assert events("purge", "--status", "delivered", "--older-than", "0s").stdout.strip() == "1 delivered events purged"
    bad = events("purge", "--status", "delivered", "--older-than", "soon")
    assert bad.returncode == 2
    assert "30s, 15m, 12h or 7d" in bad.stderr
