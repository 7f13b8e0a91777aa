"""`wxgate sessions list|revoke` as an operator runs it: real gateway processes, the real
command, MongoDB wire-protocol server over a socket. A revoked token is refused at once by
every gateway process."""

from __future__ import annotations

import hashlib
import json
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.config import DEFAULT_CONFIG
from tests.helpers import ROOT, WXGATE, free_port, run_cli
from tests.test_multiprocess import Cluster, login
from tests.test_storage_contract import STORAGE_KEY


@pytest.fixture
def cluster(tmp_path: Path, mongo_uri: str) -> Iterator[Cluster]:
    running = Cluster(tmp_path, mongo_uri)
    yield running
    running.stop()


def sessions(config: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [WXGATE, "sessions", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        input=stdin,
    )


def session_status(gateway: str, token: str) -> str:
    """``200``, or the status and error code of ``GET /v1/shop/session`` with that token."""
    request = urllib.request.Request(gateway + "/v1/shop/session", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return str(response.status)
    except urllib.error.HTTPError as exc:
        body: dict[str, Any] = json.loads(exc.read())
        return f"{exc.code} {body['error']['code']}"


def openid_of(gateway: str, token: str) -> str:
    request = urllib.request.Request(gateway + "/v1/shop/session", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return str(json.loads(response.read())["openid"])


def short(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:12]


def test_list_then_revoke_by_token_and_by_user_refused_at_once_everywhere(cluster: Cluster) -> None:
    gw1, gw2 = cluster.gateway(), cluster.gateway()
    ann = [login(cluster, gw1, "ann") for _ in range(3)]
    bob = login(cluster, gw2, "bob")
    ann_openid = openid_of(gw2, ann[0])
    config = cluster.config

    listed = sessions(config, "list", "--app", "shop", "--openid", ann_openid, "--json")
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [row["id"] for row in rows] == [short(t) for t in ann]  # oldest first
    assert all(row["created"] < row["expires"] for row in rows)
    assert all(token not in listed.stdout + listed.stderr for token in ann)
    plain = sessions(config, "list", "--app", "shop", "--openid", ann_openid)
    assert [line.split()[0] for line in plain.stdout.splitlines()] == [short(t) for t in ann]

    # one token; "-" reads it from standard input, which keeps it out of the process list
    revoked = sessions(config, "revoke", "--app", "shop", "--token", "-", stdin=ann[0] + "\n")
    assert (revoked.returncode, revoked.stdout.strip()) == (0, "1 session revoked"), revoked.stderr
    assert session_status(gw2, ann[0]) == "401 session_invalid"  # the other process, at once
    assert session_status(gw1, ann[0]) == "401 session_invalid"
    assert session_status(gw2, ann[1]) == "200"
    # revoked already: nothing to do (--token=: a token may start with "-"; --config also after the action)
    again = run_cli("sessions", "revoke", "--app", "shop", f"--token={ann[0]}", "--config", str(config))
    assert (again.returncode, again.stdout.strip()) == (0, "0 sessions revoked"), again.stderr

    # every token of the user; another user's stays
    everything = sessions(config, "revoke", "--app", "shop", "--openid", ann_openid)
    assert (everything.returncode, everything.stdout.strip()) == (0, "2 sessions revoked"), everything.stderr
    for token in ann:
        assert session_status(gw1, token) == "401 session_invalid"
        assert session_status(gw2, token) == "401 session_invalid"
    assert session_status(gw1, bob) == "200"
    empty = sessions(config, "list", "--app", "shop", "--openid", ann_openid)
    assert (empty.returncode, empty.stdout) == (0, "")


def test_usage_and_configuration_errors_exit_2(cluster: Cluster, tmp_path: Path) -> None:
    config = cluster.config
    unknown = sessions(config, "list", "--app", "nope", "--openid", "o")
    assert unknown.returncode == 2
    assert "no app 'nope'" in unknown.stderr
    assert "shop" in unknown.stderr
    neither = sessions(config, "revoke", "--app", "shop")
    assert neither.returncode == 2
    assert "one of the arguments --openid --token is required" in neither.stderr
    both = sessions(config, "revoke", "--app", "shop", "--openid", "o", "--token", "t")
    assert both.returncode == 2
    empty = sessions(config, "revoke", "--app", "shop", "--token", "-", stdin="")
    assert (empty.returncode, empty.stderr.strip()) == (2, "wxgate sessions revoke: --token: the token is empty")
    memory = tmp_path / "memory.yaml"
    memory.write_text("apps:\n  shop: {appid: wx00000000000shop, secret: s, upstream: sandbox}\n")
    refused = sessions(memory, "list", "--app", "shop", "--openid", "o")
    assert refused.returncode == 2
    assert "storage 'memory' lives inside the gateway process" in refused.stderr


def test_unreachable_storage_exits_1(tmp_path: Path) -> None:
    config = tmp_path / "down.yaml"
    config.write_text(
        "storage:\n  plugin: mongo\n"
        f"  options: {{uri: 'mongodb://127.0.0.1:{free_port()}/', timeout_ms: 300, encryption_key: '{STORAGE_KEY}'}}\n"
        "apps:\n  shop: {appid: wx00000000000shop, secret: s, upstream: sandbox}\n"
    )
    result = sessions(config, "revoke", "--app", "shop", "--openid", "o")
    assert result.returncode == 1
    assert result.stderr.startswith("wxgate sessions revoke: The gateway's storage is unavailable.")
    assert "Traceback" not in result.stderr


def test_nothing_to_attach_to_outside_the_gateways_directory(tmp_path: Path) -> None:
    # the default config's embedded storage, run where it has no data: refused, nothing created
    config = str(DEFAULT_CONFIG)
    commands = [
        ["sessions", "list", "--app", "demo", "--openid", "o", "--config", config],
        ["events", "--config", config, "list"],
    ]
    for command in commands:
        result = subprocess.run([WXGATE, *command], capture_output=True, text=True, cwd=tmp_path, timeout=60)
        assert result.returncode == 1, result.stdout + result.stderr
        assert "nothing to attach to" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_sessions_need_no_app_secret_in_their_environment(cluster: Cluster, tmp_path: Path) -> None:
    """An operator's shell need not hold the apps' secrets: sessions reads only the appids."""
    gateway = cluster.gateway()
    token = login(cluster, gateway, "cyd")
    openid = openid_of(gateway, token)
    text = cluster.config.read_text()
    assert "secret: shop-secret-1234" in text
    unset = tmp_path / "unset.yaml"
    unset.write_text(text.replace("secret: shop-secret-1234", "secret: ${WXGATE_TEST_UNSET_SHOP_SECRET}"))
    listed = sessions(unset, "list", "--app", "shop", "--openid", openid, "--json")
    assert listed.returncode == 0, listed.stderr
    assert [json.loads(line)["id"] for line in listed.stdout.splitlines()] == [short(token)]
    # what it does read must still resolve: an unset appid variable is named, exit 2
    no_appid = tmp_path / "no-appid.yaml"
    no_appid.write_text(text.replace("appid: wx00000000000shop", "appid: ${WXGATE_TEST_UNSET_SHOP_APPID}"))
    refused = sessions(no_appid, "list", "--app", "shop", "--openid", openid)
    assert refused.returncode == 2
    assert "WXGATE_TEST_UNSET_SHOP_APPID is not set" in refused.stderr
