"""gateway.config: the embedded default, ${VAR} interpolation, and errors that name file:line and key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.config import DEFAULT_CONFIG, Config, load_config, parse_config
from gateway.errors import ConfigError
from gateway.registry import Registry
from wxgate_plugins.steps.decrypt import DecryptOptions
from wxgate_plugins.steps.issue_session import IssueSessionOptions
from wxgate_plugins.steps.watermark import WatermarkOptions
from wxgate_plugins.storages.memory import MemoryOptions

FILE = "gw.yaml"
REGISTRY = Registry.discover()

APP = """apps:
  demo:
    appid: wx1234567890
    secret: s3cr3t
    upstream: sandbox
"""
APP_WITHOUT_UPSTREAM = APP.replace("    upstream: sandbox\n", "")


def parse(text: str, env: dict[str, str] | None = None) -> Config:
    return parse_config(text, FILE, REGISTRY, env=env or {})


def config_error(text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as exc_info:
        parse(text, env)
    return str(exc_info.value)


def names(config: Config, app: str, flow: str) -> list[str]:
    return [step.name for step in config.flows[app][flow]]


# --- the embedded default -------------------------------------------------------------------


def test_default_config_file_is_the_one_shipped() -> None:
    assert DEFAULT_CONFIG.name == "gateway.yaml"
    assert DEFAULT_CONFIG.parent.name == "config"
    assert DEFAULT_CONFIG.is_file()


def test_default_config_loads() -> None:
    config = load_config(env={})
    assert config.path == str(DEFAULT_CONFIG)
    assert list(config.apps) == ["demo"]
    demo = config.apps["demo"]
    assert demo.name == "demo"
    assert demo.appid == "wx0000000000demo0"
    assert demo.secret.get_secret_value() == "sandbox-demo-secret"
    assert demo.upstream == "sandbox"
    assert demo.uses_sandbox
    assert config.uses_sandbox
    assert config.server.host == "127.0.0.1"
    assert config.server.port == 8080
    assert config.server.log_format == "console"
    assert config.storage_cls is REGISTRY.storages["mongo"]
    assert config.storage_options.uri == "embedded"  # type: ignore[attr-defined]
    assert config.storage_options.data_dir == "var/mongo"  # type: ignore[attr-defined]
    assert config.storage_options.encryption_key.get_secret_value() == "auto"  # type: ignore[attr-defined]


def test_default_config_flows_in_order() -> None:
    config = load_config(env={})
    assert set(config.flows) == {"demo"}
    flows = {
        "login", "phone", "phone_code", "phone_oneshot", "phone_cloud", "userinfo", "userinfo_cloud", "session",
        "logout",
    }  # fmt: skip
    assert set(config.flows["demo"]) == flows
    assert names(config, "demo", "login") == [
        "rate_limit",
        "code2session",
        "persist_user",
        "issue_session",
        "webhook",
    ]
    tail = ["watermark", "mask_guard", "persist_phone", "webhook", "respond"]
    assert names(config, "demo", "phone") == ["check_session", "decrypt", *tail]
    assert names(config, "demo", "phone_code") == ["check_session", "phone_code", *tail]
    assert names(config, "demo", "phone_oneshot") == ["rate_limit", "code2session", "persist_user", "decrypt", *tail]
    assert config.webhooks.active == []  # WXGATE_WEBHOOK_URL unset: no endpoint
    assert names(config, "demo", "userinfo") == [
        "check_session",
        "decrypt",
        "verify_signature",
        "watermark",
        "respond",
    ]


def test_default_config_step_options_and_classes() -> None:
    config = load_config(env={})
    login = config.flows["demo"]["login"]
    assert login[3].cls is REGISTRY.steps["issue_session"]
    assert login[3].options == IssueSessionOptions(ttl=7200)
    phone = config.flows["demo"]["phone"]
    assert isinstance(phone[1].options, DecryptOptions)
    assert phone[1].options.kind == "phone"
    assert phone[1].options.try_previous_key is True
    assert isinstance(phone[2].options, WatermarkOptions)
    assert phone[2].options.max_age == 600
    userinfo = config.flows["demo"]["userinfo"]
    assert isinstance(userinfo[1].options, DecryptOptions)
    assert userinfo[1].options.kind == "userinfo"
    # each step knows where it came from: the default file, the line of its list item
    lines = Path(DEFAULT_CONFIG).read_text(encoding="utf-8").splitlines()
    for step in config.flows["demo"]["phone"]:
        file, line = step.where.rsplit(":", 1)
        assert file == str(DEFAULT_CONFIG)
        assert step.name in lines[int(line) - 1]


def test_default_config_takes_environment() -> None:
    config = load_config(
        env={
            "WXGATE_HOST": "0.0.0.0",
            "WXGATE_PORT": "9091",
            "WXGATE_LOG_FORMAT": "json",
            "WXGATE_DEMO_SECRET": "from-env",
        }
    )
    assert config.server.host == "0.0.0.0"
    assert config.server.port == 9091
    assert config.server.log_format == "json"
    assert config.apps["demo"].secret.get_secret_value() == "from-env"


def test_default_config_with_bad_environment_names_line_and_key() -> None:
    with pytest.raises(ConfigError) as exc_info:
        load_config(env={"WXGATE_LOG_FORMAT": "xml"})
    message = str(exc_info.value)
    line = _line_of(Path(DEFAULT_CONFIG).read_text(encoding="utf-8"), "log_format:")
    assert f"{DEFAULT_CONFIG}:{line}: server.log_format:" in message
    assert "'console' or 'json'" in message
    assert "xml" in message


def test_load_config_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(APP, encoding="utf-8")
    config = load_config(path, REGISTRY, env={})
    assert config.path == str(path)
    assert config.apps["demo"].appid == "wx1234567890"
    assert set(config.flows["demo"]) == {"session", "logout"}  # the built-in ones only


def test_load_config_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as exc_info:
        load_config(path, REGISTRY, env={})
    assert str(exc_info.value).startswith(f"{path}: cannot read the configuration")


def test_digest_follows_the_text() -> None:
    one = parse(APP)
    two = parse(APP + "    timeout: 3\n")
    assert re.fullmatch(r"[0-9a-f]{16}", one.digest)
    assert one.digest == parse(APP).digest
    assert one.digest != two.digest


def _line_of(text: str, needle: str) -> int:
    matches = [i for i, line in enumerate(text.splitlines(), 1) if needle in line]
    assert len(matches) == 1, matches
    return matches[0]


# --- interpolation --------------------------------------------------------------------------


def test_env_var_is_substituted() -> None:
    config = parse(
        """apps:
  demo:
    appid: ${APPID}
    secret: ${SECRET}
    upstream: sandbox
""",
        env={"APPID": "wxfromenv01", "SECRET": "abc"},
    )
    assert config.apps["demo"].appid == "wxfromenv01"
    assert config.apps["demo"].secret.get_secret_value() == "abc"


def test_env_default_used_only_when_unset() -> None:
    text = """server:
  port: ${PORT:-8181}
  host: ${HOST:-}x
apps:
  demo:
    appid: wx1234567890
    secret: ${SECRET:-fallback}
    upstream: sandbox
"""
    unset = parse(text)
    assert unset.server.port == 8181
    assert unset.server.host == "x"
    assert unset.apps["demo"].secret.get_secret_value() == "fallback"
    given = parse(text, env={"PORT": "9000", "HOST": "10.0.0.1", "SECRET": "given"})
    assert given.server.port == 9000
    assert given.server.host == "10.0.0.1x"
    assert given.apps["demo"].secret.get_secret_value() == "given"


def test_several_refs_in_one_value_and_no_recursion() -> None:
    config = parse(
        """apps:
  demo:
    appid: wx${A}_${B:-two}
    secret: ${S}
    upstream: sandbox
""",
        env={"A": "one", "S": "${A}"},
    )
    assert config.apps["demo"].appid == "wxone_two"
    # a value is substituted once: an env value that looks like a reference stays literal
    assert config.apps["demo"].secret.get_secret_value() == "${A}"


def test_env_argument_not_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WXGATE_TEST_ONLY_IN_OS", "from-os")
    text = APP.replace("s3cr3t", "${WXGATE_TEST_ONLY_IN_OS:-from-default}")
    assert parse(text).apps["demo"].secret.get_secret_value() == "from-default"
    # without env=, the process environment is used
    assert parse_config(text, FILE, REGISTRY).apps["demo"].secret.get_secret_value() == "from-os"


def test_missing_env_var_names_file_line_key_and_variable() -> None:
    message = config_error(
        """server:
  port: 8080
apps:
  demo:
    appid: wx1234567890
    secret: ${DEMO_SECRET}
"""
    )
    assert message.startswith(f"{FILE}:6: apps.demo.secret: ")
    assert "environment variable DEMO_SECRET is not set" in message
    assert "${DEMO_SECRET:-default}" in message


def test_missing_env_var_in_a_step_list() -> None:
    message = config_error(
        """pipelines:
  login:
    - code2session
    - ${LOGIN_STEP}
"""
        + APP
    )
    assert message.startswith(f"{FILE}:4: pipelines.login[1]: ")
    assert "LOGIN_STEP" in message


# --- errors: file:line, key path, what was expected -----------------------------------------


def test_unknown_step_lists_known_steps() -> None:
    message = config_error(
        """pipelines:
  login:
    - code2session
    - isue_session
"""
        + APP
    )
    assert message.startswith(f"{FILE}:4: pipelines.login[1]: unknown step 'isue_session'")
    known = message.split("known steps: ", 1)[1].split(", ")
    assert known == sorted(REGISTRY.steps)
    assert "issue_session" in known


def test_unknown_step_with_options() -> None:
    message = config_error(
        """pipelines:
  phone:
    - check_session
    - decryptt:
        kind: phone
"""
        + APP
    )
    assert message.startswith(f"{FILE}:4: pipelines.phone[1].decryptt: unknown step 'decryptt'")
    assert "decrypt, " in message


def test_unknown_step_option_lists_allowed_keys() -> None:
    message = config_error(
        """pipelines:
  phone:
    - check_session
    - decrypt: {knd: phone}
"""
        + APP
    )
    assert (
        message
        == f"{FILE}:4: pipelines.phone[1].decrypt.knd: unknown key 'knd'; expected one of: kind, try_previous_key"
    )


def test_unknown_step_option_in_block_style_points_at_its_line() -> None:
    message = config_error(
        """pipelines:
  phone:
    - check_session
    - decrypt:
        kind: phone
        try_previous: false
"""
        + APP
    )
    assert message.startswith(f"{FILE}:6: pipelines.phone[1].decrypt.try_previous: unknown key 'try_previous'")
    assert "kind, try_previous_key" in message


def test_wrong_option_type() -> None:
    message = config_error(
        """pipelines:
  login:
    - code2session
    - issue_session:
        ttl: "soon"
"""
        + APP
    )
    assert message.startswith(f"{FILE}:5: pipelines.login[1].issue_session.ttl: ")
    assert "valid integer" in message
    assert "'soon'" in message


def test_wrong_option_type_flow_style() -> None:
    message = config_error(
        """pipelines:
  login:
    - code2session
    - issue_session: {ttl: "soon"}
"""
        + APP
    )
    assert message.startswith(f"{FILE}:4: pipelines.login[1].issue_session.ttl: ")
    assert "valid integer" in message


@pytest.mark.parametrize(
    ("value", "expected"),
    [("30", "greater than or equal to 60"), ("99999999", "less than or equal to 2592000")],
)
def test_option_out_of_range(value: str, expected: str) -> None:
    message = config_error(
        f"""pipelines:
  login:
    - code2session
    - issue_session:
        ttl: {value}
"""
        + APP
    )
    assert message.startswith(f"{FILE}:5: pipelines.login[1].issue_session.ttl: ")
    assert expected in message
    assert f"(got {value})" in message


def test_literal_option_lists_choices() -> None:
    message = config_error(
        """pipelines:
  phone:
    - check_session
    - decrypt:
        kind: fone
"""
        + APP
    )
    assert message.startswith(f"{FILE}:5: pipelines.phone[1].decrypt.kind: ")
    assert "'phone', 'userinfo', 'share' or 'any'" in message


def test_step_with_two_names_is_refused() -> None:
    message = config_error(
        """pipelines:
  login:
    - code2session: {}
      issue_session: {}
"""
        + APP
    )
    assert message.startswith(f"{FILE}:3: pipelines.login[0]: a step is a name or a mapping of one name")


def test_unknown_top_level_key() -> None:
    message = config_error(
        APP
        + """pipeline:
  login:
    - code2session
"""
    )
    expected = "expected one of: apps, pipelines, sandbox, server, storage, webhooks"
    assert message == f"{FILE}:6: pipeline: unknown key 'pipeline'; {expected}"


def test_unknown_server_key_lists_server_keys() -> None:
    message = config_error(
        """server:
  port: 8080
  hots: 0.0.0.0
"""
        + APP
    )
    assert message.startswith(f"{FILE}:3: server.hots: unknown key 'hots'")
    assert (
        "expected one of: admin, event_loop, header_timeout, host, log_format, max_body_bytes, pid_file, port, "
        "request_timeout, "
        "trusted_proxies, watch_config" in message
    )


def test_unknown_app_key_lists_app_keys() -> None:
    message = config_error(APP + "    timout: 3\n")
    assert message.startswith(f"{FILE}:6: apps.demo.timout: unknown key 'timout'")
    assert "timeout" in message.split("expected one of:", 1)[1]


def test_unknown_flow_name() -> None:
    message = config_error(
        """pipelines:
  signup:
    - code2session
"""
        + APP
    )
    assert message.startswith(f"{FILE}:2: pipelines.signup: ")
    expected = "'login', 'phone', 'phone_oneshot', 'phone_code', 'phone_cloud', 'userinfo', 'userinfo_cloud', "
    assert expected + "'session' or 'logout'" in message


@pytest.mark.parametrize("secret", ['""', '"   "', "${EMPTY:-}"])
def test_empty_secret(secret: str) -> None:
    message = config_error(
        f"""apps:
  demo:
    appid: wx1234567890
    upstream: sandbox
    secret: {secret}
"""
    )
    assert message.startswith(f"{FILE}:5: apps.demo.secret: the app secret is empty")
    assert "secret: ${MY_APP_SECRET}" in message


def test_missing_secret() -> None:
    message = config_error(
        """apps:
  demo:
    appid: wx1234567890
"""
    )
    assert message == (
        f"{FILE}:2: apps.demo.secret: required key is missing\n{FILE}:2: apps.demo.upstream: required key is missing"
    )


def test_secret_of_wrong_type_is_not_echoed() -> None:
    message = config_error(
        """apps:
  demo:
    appid: wx1234567890
    secret: 98765432109876
"""
    )
    assert message.startswith(f"{FILE}:4: apps.demo.secret: ")
    assert "98765432109876" not in message


@pytest.mark.parametrize(
    "url",
    ["ftp://api.weixin.qq.com", "api.weixin.qq.com", "https://", "https://api weixin.qq.com", "http:/x"],
)
def test_bad_upstream_url(url: str) -> None:
    message = config_error(APP_WITHOUT_UPSTREAM + f"    upstream: {url}\n")
    assert message.startswith(f"{FILE}:5: apps.demo.upstream: ")
    assert "expected 'sandbox' or a base URL such as https://api.weixin.qq.com" in message


@pytest.mark.parametrize(
    ("url", "stored"),
    [
        ("https://api.weixin.qq.com", "https://api.weixin.qq.com"),
        ("https://api.weixin.qq.com/", "https://api.weixin.qq.com"),
        ("http://127.0.0.1:8081/prefix/", "http://127.0.0.1:8081/prefix"),
    ],
)
def test_good_upstream_url(url: str, stored: str) -> None:
    app = parse(APP_WITHOUT_UPSTREAM + f"    upstream: {url}\n").apps["demo"]
    assert app.upstream == stored
    assert not app.uses_sandbox


def test_app_override_replaces_a_flow_for_that_app_only() -> None:
    config = parse(
        """pipelines:
  login:
    - code2session
    - issue_session
  phone:
    - check_session
    - decrypt: {kind: phone}
    - respond
apps:
  demo:
    appid: wx1234567890
    secret: s
    pipelines:
      phone:
        - check_session
        - decrypt: {kind: phone, try_previous_key: false}
        - watermark: {max_age: 60}
        - respond: {fields: [phoneNumber]}
    upstream: sandbox
  other:
    appid: wx0987654321
    secret: t
    upstream: sandbox
"""
    )
    assert names(config, "demo", "phone") == ["check_session", "decrypt", "watermark", "respond"]
    assert names(config, "other", "phone") == ["check_session", "decrypt", "respond"]
    # flows the app does not override are the shared ones
    assert names(config, "demo", "login") == ["code2session", "issue_session"]
    assert config.flows["demo"]["login"] == config.flows["other"]["login"]
    demo_decrypt = config.flows["demo"]["phone"][1]
    other_decrypt = config.flows["other"]["phone"][1]
    assert isinstance(demo_decrypt.options, DecryptOptions)
    assert isinstance(other_decrypt.options, DecryptOptions)
    assert demo_decrypt.options.try_previous_key is False
    assert other_decrypt.options.try_previous_key is True
    assert demo_decrypt.where == f"{FILE}:16"
    assert other_decrypt.where == f"{FILE}:7"
    assert config.apps["other"].name == "other"


def test_app_override_may_add_a_flow_missing_from_shared() -> None:
    config = parse(
        APP
        + """    pipelines:
      userinfo:
        - check_session
        - decrypt: {kind: userinfo}
"""
    )
    assert names(config, "demo", "userinfo") == ["check_session", "decrypt"]
    assert set(config.flows["demo"]) == {"userinfo", "session", "logout"}  # and the built-in ones


def test_error_in_app_override_names_its_path() -> None:
    message = config_error(
        """pipelines:
  phone:
    - check_session
apps:
  demo:
    appid: wx1234567890
    secret: s
    upstream: sandbox
    pipelines:
      phone:
        - check_session
        - decrypt: {kind: phone, knd: x}
"""
    )
    assert message.startswith(f"{FILE}:12: apps.demo.pipelines.phone[1].decrypt.knd: unknown key 'knd'")
    assert "kind, try_previous_key" in message


def test_invalid_yaml_syntax() -> None:
    message = config_error(
        """server:
  port: 8080
apps:
  demo:
    appid: wx: 1234567890
    secret: s
"""
    )
    assert message == f"{FILE}:5:14: not valid YAML: mapping values are not allowed here"


def test_unclosed_flow_sequence_points_where_the_parser_stopped() -> None:
    message = config_error(
        """server:
  port: 8080
apps:
  demo:
    appid: [wx1234567890
    secret: s
"""
    )
    # the '[' opens on line 5; the parser finds the problem at the ':' of line 6
    assert message.startswith(f"{FILE}:6:")
    assert "not valid YAML" in message


def test_invalid_yaml_indentation() -> None:
    message = config_error(
        """apps:
  demo:
    appid: wx1234567890
   secret: s
"""
    )
    assert re.match(rf"{re.escape(FILE)}:4:\d+: not valid YAML: ", message), message


def test_duplicate_key_names_the_second_occurrence() -> None:
    message = config_error(
        """apps:
  demo:
    appid: wx1234567890
    secret: s
    appid: wx0000000000
"""
    )
    assert message == f"{FILE}:5: apps.demo.appid: duplicate key"


def test_duplicate_top_level_section() -> None:
    message = config_error(
        APP
        + """server:
  port: 1
server:
  port: 2
"""
    )
    assert message == f"{FILE}:8: server: duplicate key"


def test_duplicate_step_option() -> None:
    message = config_error(
        """pipelines:
  login:
    - issue_session:
        ttl: 100
        ttl: 200
"""
        + APP
    )
    assert message == f"{FILE}:5: pipelines.login[0].issue_session.ttl: duplicate key"


def test_server_port_out_of_range() -> None:
    message = config_error("server:\n  port: 70000\n" + APP)
    assert message.startswith(f"{FILE}:2: server.port: ")
    assert "less than or equal to 65535" in message


def test_unknown_storage_lists_known() -> None:
    message = config_error("storage:\n  plugin: redis\n" + APP)
    assert message.startswith(f"{FILE}:2: storage.plugin: unknown storage 'redis'; known: ")
    assert message.split("known: ", 1)[1].split(", ") == sorted(REGISTRY.storages)
    assert "memory" in REGISTRY.storages


def test_storage_options_validated_by_the_plugin() -> None:
    message = config_error("storage:\n  plugin: memory\n  options:\n    max_sessions: 0\n" + APP)
    assert message.startswith(f"{FILE}:4: storage.options.max_sessions: ")
    assert "greater than or equal to 1" in message
    config = parse("storage:\n  plugin: memory\n  options:\n    max_sessions: 5\n" + APP)
    assert config.storage_options == MemoryOptions(max_sessions=5)


def test_no_apps() -> None:
    message = config_error("server:\n  port: 1\n")
    assert message.endswith("apps: required key is missing")
    assert message.startswith(f"{FILE}")


def test_empty_apps_mapping() -> None:
    message = config_error("apps: {}\n")
    assert message.startswith(f"{FILE}:1: apps: ")
    assert "at least 1" in message


def test_bad_app_name() -> None:
    message = config_error(APP.replace("demo:", "my app:"))
    assert message.startswith(f"{FILE}:1: apps: ")
    assert "app name 'my app' must be 1-64 letters, digits, '_' or '-'" in message


def test_document_must_be_a_mapping() -> None:
    message = config_error("- apps\n- pipelines\n")
    assert message.startswith(f"{FILE}:1: (top level): the configuration must be a mapping")


def test_several_validation_errors_are_all_reported() -> None:
    message = config_error(
        """server:
  port: -1
apps:
  demo:
    appid: wx1234567890
    secret: s
    timeout: 0
    upstream: sandbox
"""
    )
    lines = message.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{FILE}:2: server.port: ")
    assert lines[1].startswith(f"{FILE}:7: apps.demo.timeout: ")
