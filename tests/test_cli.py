"""The commands, run as a user would: real processes, real ports."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from gateway.event_loop import uvloop_installed
from gateway.sandbox.world import phone_for
from gateway.wechat import crypto
from tests.helpers import ROOT, WXGATE, Started, free_port, post, run_cli, start_on_a_free_port


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


def start_run_py(workdir: Path, port: int | None = None) -> Started:
    """`python run.py --port P`, serving; ``port``: the one to try first."""

    def start(port: int) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, str(ROOT / "run.py"), "--port", str(port)],
            cwd=workdir,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "WXGATE_LOG_FORMAT": "json"},
        )

    return start_on_a_free_port(start, port=port)


def stop(proc: subprocess.Popen[str]) -> list[dict[str, Any]]:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert phone_for("cli-user") not in out
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_run_py_serves_the_embedded_default_and_persists(tmp_path: Path) -> None:
    """The README's first command: `python run.py` with no set-up serves a working demo
    on the embedded MongoDB, whose data (under ./var) survives a restart."""
    proc, port, base = start_run_py(tmp_path)
    try:
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
    # start-up lines of the storage (a schema migration, say) may come before it
    assert names.index("gateway_started") < names.index("request")
    # the default (auto) runs on uvloop where it is installed (tests/test_event_loop.py: where wxgate depends on it)
    expected_loop = "uvloop" if uvloop_installed() else "asyncio"
    assert next(e for e in events if e["event"] == "gateway_started")["event_loop"] == expected_loop
    assert names[-1] == "gateway_stopped"
    assert sum(1 for e in events if e["event"] == "request" and e.get("flow") == "phone") == 1
    assert (tmp_path / "var" / "mongo" / "wxgate.db").is_file()
    # the key beside the data, not in it: a copy of the data alone does not open it
    assert (tmp_path / "var" / "keys" / "mongo.key").stat().st_mode & 0o777 == 0o600
    assert not (tmp_path / "var" / "mongo" / "storage.key").exists()

    # Restarted: the login token from before still works (the sandbox, in memory, starts
    # afresh, so the phone comes through the phone-code flow, which needs no old key).
    proc, _, base = start_run_py(tmp_path, port)  # on another port if that one was taken meanwhile
    try:
        post(base + "/_sandbox/demo/wx.login", {"user": "cli-user"})
        _, device = post(base + "/_sandbox/demo/getPhoneNumber", {"user": "cli-user"})
        status, phone = post(base + "/v1/demo/phone", {"code": device["code"]}, login["token"])
        assert status == 200, phone
        assert phone["purePhoneNumber"] == phone_for("cli-user")
    finally:
        stop(proc)


def test_standalone_sandbox_is_a_real_upstream(tmp_path: Path) -> None:
    """`wxgate sandbox` on its own port; the gateway reaches it as it would reach WeChat."""
    config = tmp_path / "split.yaml"

    def command(*args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([WXGATE, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def start_sandbox(sandbox_port: int) -> subprocess.Popen[str]:
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
        return command("sandbox", "--config", str(config), "--port", str(sandbox_port))

    sandbox, _, sb = start_on_a_free_port(start_sandbox, "/_sandbox/_faults")
    gateway: subprocess.Popen[str] | None = None
    try:
        gateway, _, gw = start_on_a_free_port(
            lambda port: command("serve", "--config", str(config), "--port", str(port))
        )
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
            if proc is not None:
                proc.send_signal(signal.SIGTERM)
                proc.communicate(timeout=20)


def test_sandbox_on_a_port_in_use_is_a_clean_error(tmp_path: Path) -> None:
    """One line naming the address and the cause, exit 1, no traceback; and its default port is
    not the admin listener's, so the two run side by side as the docs set them up."""
    from gateway.cli.sandbox import SANDBOX_PORT
    from gateway.config import AdminConfig

    assert AdminConfig().port != SANDBOX_PORT
    config = tmp_path / "sb.yaml"
    config.write_text(
        "storage: {plugin: memory}\napps:\n  demo: {appid: wx0000000000demo0, secret: s, upstream: sandbox}\n"
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("sandbox", "--config", str(config), "--port", str(port))
    assert result.returncode == 1, result.stderr
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in result.stderr
    assert "Traceback" not in result.stderr


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


# --- the grammar: where the file comes from, options before or after the command ---------------

SECRET_VAR = "WXGATE_TEST_NEVER_SET_SECRET"


def wxgate(
    *args: str, cwd: Path, env: dict[str, str] | None = None, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """The command in ``cwd``, with none of the caller's WXGATE_ variables (WXGATE_CONFIG would decide)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("WXGATE_")}
    return subprocess.run(
        [WXGATE, *args], capture_output=True, text=True, timeout=60, cwd=cwd, env={**base, **(env or {})}, input=stdin
    )


def mongo_config(path: Path, mongo_uri: str, database: str) -> Path:
    """A gateway's file whose app secret comes from a variable this test never sets."""
    path.write_text(
        "server: {log_format: json}\n"
        "storage:\n  plugin: mongo\n"
        f"  options: {{uri: '{mongo_uri}', database: {database}, encryption_key: "
        "'MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY='}\n"
        "webhooks:\n  endpoints:\n"
        "    - {name: crm, url: '${WXGATE_TEST_NEVER_SET_URL}', secret: '${WXGATE_TEST_NEVER_SET_URL}'}\n"
        f"apps:\n  shop: {{appid: wx00000000000shop, secret: '${{{SECRET_VAR}}}', upstream: 'https://api.weixin.qq.com'}}\n"
    )
    return path


def test_config_lookup_order(tmp_path: Path) -> None:
    """--config, then WXGATE_CONFIG, then ./wxgate.yaml, ./config/gateway.yaml, the bundled default."""
    app = "apps:\n  {name}: {{appid: wx0000000000{name}, secret: s, upstream: sandbox}}\n"
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "gateway.yaml").write_text(app.format(name="cfgdir"))
    (tmp_path / "named.yaml").write_text(app.format(name="named"))
    (tmp_path / "env.yaml").write_text(app.format(name="fromenv"))

    def app_names(*args: str, env: dict[str, str] | None = None) -> list[str]:
        result = wxgate("pipelines", "--json", *args, cwd=tmp_path, env=env)
        assert result.returncode == 0, result.stderr
        return list(json.loads(result.stdout))

    assert app_names() == ["cfgdir"]
    (tmp_path / "wxgate.yaml").write_text(app.format(name="local"))
    assert app_names() == ["local"]
    assert app_names(env={"WXGATE_CONFIG": "env.yaml"}) == ["fromenv"]
    assert app_names("--config", "named.yaml", env={"WXGATE_CONFIG": "env.yaml"}) == ["named"]
    assert app_names("named.yaml", env={"WXGATE_CONFIG": "env.yaml"}) == ["named"]  # the positional file
    empty = tmp_path / "empty"
    empty.mkdir()
    bundled = wxgate("validate", cwd=empty)
    assert bundled.returncode == 0, bundled.stderr
    assert bundled.stdout.startswith(str(ROOT / "config" / "gateway.yaml") + ": valid")


def test_config_and_env_file_before_or_after_the_command(tmp_path: Path) -> None:
    config = tmp_path / "needs.yaml"
    config.write_text(f"apps:\n  shop: {{appid: wx00000000000shop, secret: '${{{SECRET_VAR}}}', upstream: sandbox}}\n")
    env_file = tmp_path / "gateway.env"
    env_file.write_text(
        f"# the gateway's secrets, as systemd's EnvironmentFile holds them\n{SECRET_VAR}='from the file'\n"
    )
    missing = wxgate("validate", "--config", str(config), cwd=tmp_path)
    assert missing.returncode == 2
    assert f"environment variable {SECRET_VAR} is not set" in missing.stderr
    for args in (
        ["--config", str(config), "--env-file", str(env_file), "validate"],
        ["validate", "--config", str(config), "--env-file", str(env_file)],
        ["--env-file", str(env_file), "validate", str(config)],
    ):
        result = wxgate(*args, cwd=tmp_path)
        assert result.returncode == 0, (args, result.stderr)
        assert result.stdout.startswith(f"{config}: valid")
    shown = wxgate("--env-file", str(env_file), "pipelines", "--json", "--config", str(config), cwd=tmp_path)
    assert json.loads(shown.stdout)["shop"]["secret"] == "***"
    absent = wxgate("--env-file", str(tmp_path / "nope.env"), "validate", str(config), cwd=tmp_path)
    assert absent.returncode == 2
    assert "--env-file" in absent.stderr
    assert "no such file" in absent.stderr


def test_an_env_file_line_that_does_not_parse_is_refused_with_file_and_line(tmp_path: Path) -> None:
    """Not skipped with a warning that names neither: the command would run without that variable."""
    config = tmp_path / "needs.yaml"
    config.write_text(f"apps:\n  shop: {{appid: wx00000000000shop, secret: '${{{SECRET_VAR}}}', upstream: sandbox}}\n")
    env_file = tmp_path / "gateway.env"
    env_file.write_text(f'# secrets\nWXGATE_OTHER=1\n{SECRET_VAR}="never closed\nexport ANOTHER=2\n')
    result = wxgate("--env-file", str(env_file), "validate", str(config), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert f"--env-file {env_file}:3: not a NAME=value line" in result.stderr
    assert "never closed" not in result.stderr  # the line may hold a secret
    assert "python-dotenv" not in result.stderr


def test_a_missing_file_from_wxgate_config_says_where_its_path_came_from(tmp_path: Path) -> None:
    missing = tmp_path / "etc" / "wxgate.yaml"
    result = wxgate("events", "list", cwd=tmp_path, env={"WXGATE_CONFIG": str(missing)})
    assert result.returncode == 2
    assert f"{missing}: cannot read the configuration" in result.stderr
    assert "the path is WXGATE_CONFIG's" in result.stderr
    given = wxgate("events", "list", "--config", str(missing), cwd=tmp_path)
    assert given.returncode == 2
    assert "WXGATE_CONFIG" not in given.stderr  # typed by the operator: nothing to explain


def test_serve_is_assumed_only_when_no_command_is_named(tmp_path: Path) -> None:
    # `wxgate --config FILE version` runs version, not serve with a stray word
    named = wxgate("--config", "whatever.yaml", "version", cwd=tmp_path)
    assert named.returncode == 0, named.stderr
    assert named.stdout.startswith("wxgate ")
    # only options: serve, which here meets a file that does not exist
    assumed = wxgate("--config", "missing.yaml", "--port", "0", cwd=tmp_path)
    assert assumed.returncode == 2
    assert "missing.yaml: cannot read the configuration" in assumed.stderr
    unknown = wxgate("frobnicate", cwd=tmp_path)
    assert unknown.returncode == 2
    assert "invalid choice: 'frobnicate'" in unknown.stderr


def test_events_list_without_a_gateway_creates_nothing(tmp_path: Path) -> None:
    """Run where no gateway ever ran, with the default file: no embedded server, no var/mongo."""
    for args in (["events", "list"], ["sessions", "list", "--app", "demo", "--openid", "o"]):
        result = wxgate(*args, cwd=tmp_path)
        assert result.returncode == 1, result.stderr
        assert "nothing to attach to" in result.stderr
        # the file was found: what is missing is the gateway's working directory, not --config
        assert "'var/mongo', relative to the directory the gateway runs in" in result.stderr
        assert "give --config" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_events_need_only_the_storage_section(tmp_path: Path, mongo_uri: str) -> None:
    """The shell that runs `wxgate events` need not hold the apps' secrets; an empty field prints as -."""
    import asyncio
    import time

    from gateway.config import load_config
    from gateway.storage import OutboxEvent

    config = mongo_config(tmp_path / "gw.yaml", mongo_uri, f"cli_events_{os.getpid()}")
    storage_config = load_config(config, sections=("storage",), env={})

    async def seed() -> None:
        storage = storage_config.storage_cls(storage_config.storage_options)
        await storage.start()
        try:
            event = OutboxEvent("ev1:crm", "user.login", "wx00000000000shop", "crm", {"a": 1}, time.time())
            await storage.enqueue_event(event)
        finally:
            await storage.close()

    asyncio.run(seed())
    listed = wxgate("events", "list", "--config", str(config), cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    (row,) = listed.stdout.splitlines()
    assert row.split("  ")[:5] == ["ev1:crm", "user.login", "crm", "pending", "0"]
    assert row.split("  ")[-1] == "-"
    assert "None" not in row
    as_json = wxgate("events", "--config", str(config), "list", "--json", cwd=tmp_path)
    assert json.loads(as_json.stdout)["last_error"] is None
    # a file that cannot be read still fails as a configuration error
    broken = tmp_path / "broken.yaml"
    broken.write_text(config.read_text().replace("plugin: mongo", "plugin: mango"))
    refused = wxgate("events", "list", "--config", str(broken), cwd=tmp_path)
    assert refused.returncode == 2
    assert "unknown storage 'mango'" in refused.stderr


def test_reload_needs_no_app_secret_to_signal(tmp_path: Path) -> None:
    """The variables the gateway gets from its environment file need not be in the operator's shell:
    reload checks what it can (the server section) and signals; an invalid server section still stops it."""
    config = tmp_path / "gw.yaml"
    config.write_text(
        "server: {port: 8080}\n"
        f"apps:\n  shop: {{appid: wx00000000000shop, secret: '${{{SECRET_VAR}}}', upstream: sandbox}}\n"
    )
    waiter = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, sys, time\nsignal.signal(signal.SIGHUP, lambda *a: sys.exit(7))\n"
            "print('ready', flush=True)\ntime.sleep(30)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert waiter.stdout is not None
        assert waiter.stdout.readline().strip() == "ready"
        result = wxgate("reload", "--config", str(config), "--pid", str(waiter.pid), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert f"environment variable {SECRET_VAR} is not set" in result.stderr  # said, not fatal
        assert f"reload signal sent to {waiter.pid}" in result.stdout
        assert waiter.wait(timeout=10) == 7
    finally:
        waiter.kill()
        waiter.wait()
    config.write_text(config.read_text().replace("port: 8080", "port: eighty"))
    bad = wxgate("reload", "--config", str(config), "--pid", "1", cwd=tmp_path)
    assert bad.returncode == 2
    assert f"{config}:1: server.port" in bad.stderr


def test_reload_exit_codes_without_a_pid(tmp_path: Path) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text("apps:\n  shop: {appid: wx00000000000shop, secret: s, upstream: sandbox}\n")
    unset = wxgate("reload", "--config", str(config), cwd=tmp_path)
    assert unset.returncode == 2  # a usage error: nowhere to find the pid
    assert f"{config} has no server.pid_file" in unset.stderr  # the file it read, named
    assert "give --pid, or set server.pid_file" in unset.stderr
    config.write_text(f"server: {{pid_file: '{tmp_path / 'gone.pid'}'}}\n" + config.read_text())
    gone = wxgate("reload", "--config", str(config), cwd=tmp_path)
    assert gone.returncode == 1  # nothing runs to reload
    assert "cannot read" in gone.stderr


def test_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    """`wxgate version | head`: the reader goes away; no traceback, exit 0."""
    proc = subprocess.Popen([WXGATE, "version"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    assert proc.stdout is not None
    proc.stdout.close()  # before wxgate writes: its write meets a closed pipe
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert err == b""


def test_init_writes_a_starter_that_serves_as_written(tmp_path: Path) -> None:
    made = wxgate("init", "site", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    starter = tmp_path / "site" / "wxgate.yaml"
    text = starter.read_text()
    assert text.count("\n#") > 10  # commented
    again = wxgate("init", "site", cwd=tmp_path)
    assert again.returncode == 2
    assert "exists" in again.stderr
    assert starter.read_text() == text
    proc, _, base = start_on_a_free_port(
        lambda port: subprocess.Popen(
            [WXGATE, "serve", "--port", str(port)],
            cwd=starter.parent,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**{k: v for k, v in os.environ.items() if not k.startswith("WXGATE_")}, "WXGATE_LOG_FORMAT": "json"},
        )
    )
    try:
        walk_through(base)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    started = [json.loads(line) for line in out.splitlines() if '"gateway_started"' in line]
    assert started[0]["config"] == str(starter.resolve())  # serve says which file it found


def walk_through(base: str) -> None:
    """The README's walk-through, each of its flows once: the starter serves every one of them."""
    user = "starter"
    phone = phone_for(user)
    _, device = post(base + "/_sandbox/demo/wx.login", {"user": user})
    status, login = post(base + "/v1/demo/login", {"code": device["code"]})
    assert status == 200, login
    token = login["token"]
    _, button = post(base + "/_sandbox/demo/getPhoneNumber", {"user": user, "cloud": True})
    encrypted = {"encryptedData": button["encryptedData"], "iv": button["iv"]}
    for flow, body in (("phone", encrypted), ("phone_code", {"code": button["code"]})):
        status, answer = post(base + "/v1/demo/phone", body, token)
        assert (status, answer.get("purePhoneNumber")) == (200, phone), (flow, answer)
    status, answer = post(base + "/v1/demo/phone", {"cloudID": button["cloudID"]}, token)
    assert (status, answer.get("purePhoneNumber")) == (200, phone), ("phone_cloud", answer)
    _, device = post(base + "/_sandbox/demo/wx.login", {"user": user})
    _, button = post(base + "/_sandbox/demo/getPhoneNumber", {"user": user})
    oneshot = {"code": device["code"], "encryptedData": button["encryptedData"], "iv": button["iv"]}
    status, answer = post(base + "/v1/demo/phone", oneshot)  # no token: the one-shot flow
    assert (status, answer.get("purePhoneNumber")) == (200, phone), ("phone_oneshot", answer)
    _, device = post(base + "/_sandbox/demo/wx.login", {"user": user})  # the one-shot changed the session_key
    token = post(base + "/v1/demo/login", {"code": device["code"]})[1]["token"]
    _, profile = post(base + "/_sandbox/demo/getUserProfile", {"user": user, "cloud": True})
    fields = {k: profile[k] for k in ("encryptedData", "iv", "rawData", "signature")}
    status, answer = post(base + "/v1/demo/userinfo", fields, token)
    assert (status, answer.get("nickName")) == (200, profile["userInfo"]["nickName"]), ("userinfo", answer)
    status, answer = post(base + "/v1/demo/userinfo", {"cloudID": profile["cloudID"]}, token)
    assert (status, answer.get("nickName")) == (200, profile["userInfo"]["nickName"]), ("userinfo_cloud", answer)
    request = urllib.request.Request(base + "/v1/demo/session", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.loads(response.read())["phone"]["countryCode"] == "86"
    logout = urllib.request.Request(base + "/v1/demo/logout", b"", {"Authorization": f"Bearer {token}"}, method="POST")
    with urllib.request.urlopen(logout, timeout=10) as response:
        assert response.status == 204


def test_sessions_attach_to_the_running_gateway_then_open_its_data(tmp_path: Path) -> None:
    """With `uri: embedded`: while the gateway runs, the CLI uses its embedded server; once it has
    stopped, the CLI opens the data directory it left. Neither creates anything new."""
    proc, _, base = start_run_py(tmp_path)
    try:
        _, device = post(base + "/_sandbox/demo/wx.login", {"user": "attach-user"})
        status, login = post(base + "/v1/demo/login", {"code": device["code"]})
        assert status == 200, login
        running = wxgate("sessions", "list", "--app", "demo", "--openid", login["openid"], "--json", cwd=tmp_path)
        assert running.returncode == 0, running.stderr
        assert len(running.stdout.splitlines()) == 1
    finally:
        stop(proc)
    kept = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    stopped = wxgate("sessions", "list", "--app", "demo", "--openid", login["openid"], "--json", cwd=tmp_path)
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout == running.stdout
    assert not (tmp_path / "var" / "mongo" / "server.json").exists()  # its own server stopped with it
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()) == kept
