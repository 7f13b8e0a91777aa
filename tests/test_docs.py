"""The docs follow the code: these fail when README.md, docs/plugins.md or docs/hooks.md
drift from it.

The lists come from the code itself (the error hierarchy, the installed entry points, the
CLI parser, the config's models, the hook specifications), so adding an error, a step, an
option, a storage, a subcommand, a setting or a hook without documenting it fails here,
naming what is missing.
"""

from __future__ import annotations

import argparse
import inspect
import re
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from gateway import hookspecs
from gateway.cli import _parser
from gateway.config import (
    DEFAULT_CONFIG,
    AppConfig,
    EndpointConfig,
    SandboxConfig,
    ServerConfig,
    WebhooksConfig,
)
from gateway.errors import WECHAT_ERRCODES, GatewayError, all_error_classes
from gateway.flow_names import FLOWS
from gateway.hookspecs import HOOK_NAMES
from gateway.registry import Registry
from tests.helpers import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")
PLUGINS_GUIDE = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
HOOKS_GUIDE = (ROOT / "docs" / "hooks.md").read_text(encoding="utf-8")
OPERATIONS = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")

# Modules whose plugins and errors ship with wxgate; a third-party plugin installed in the
# same environment documents itself.
OWN_MODULES = ("gateway.", "wxgate_plugins.")


def _section(text: str, heading: str, level: int = 2, doc: str = "README.md") -> str:
    """The body of the ``## heading`` section (up to the next heading of the same or a higher level)."""
    marks = "#" * level
    pattern = rf"^{marks} {re.escape(heading)}\n(.*?)(?=^#{{1,{level}}} |\Z)"
    match = re.search(pattern, text, re.MULTILINE | re.DOTALL)
    assert match is not None, f"{doc} has no '{marks} {heading}' section"
    return match.group(1)


def _table_rows(section: str) -> dict[str, list[str]]:
    """Rows of the markdown tables in ``section``, keyed by the backticked name in their first cell."""
    rows: dict[str, list[str]] = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")] if line.startswith("|") else []
        if cells and (name := re.fullmatch(r"`([^`]+)`", cells[0])):
            rows[name.group(1)] = cells
    return rows


def _own(cls: type[Any]) -> bool:
    return cls.__module__.startswith(OWN_MODULES)


def _own_error_classes() -> list[type[GatewayError]]:
    return [cls for cls in all_error_classes() if _own(cls)]


def test_every_error_code_is_in_the_error_table() -> None:
    rows = _table_rows(_section(README, "Errors"))
    missing = sorted({cls.code for cls in _own_error_classes()} - set(rows))
    assert not missing, f"README.md's error table has no row for: {missing}"


def test_error_table_statuses_match_the_code() -> None:
    rows = _table_rows(_section(README, "Errors"))
    wrong = {
        cls.code: (rows[cls.code][1], cls.status)
        for cls in _own_error_classes()
        if cls.code in rows and rows[cls.code][1] != str(cls.status)
    }
    assert not wrong, f"error table status (README, code) differs: {wrong}"


def test_error_table_retryable_column_matches_the_code() -> None:
    rows = _table_rows(_section(README, "Errors"))
    wrong = {
        cls.code: (rows[cls.code][4], cls.retryable)
        for cls in _own_error_classes()
        if cls.code in rows and rows[cls.code][4] != ("yes" if cls.retryable else "no")
    }
    assert not wrong, f"README.md's error table shows another retryable value (table, code): {wrong}"


def test_error_table_shows_every_wechat_errcode_mapping() -> None:
    rows = _table_rows(_section(README, "Errors"))
    missing = []
    for errcode, cls in WECHAT_ERRCODES.items():
        row = rows.get(cls.code)
        listed = re.findall(r"-?\d+", row[-1]) if row else []
        if str(errcode) not in listed:
            missing.append(f"{errcode} -> {cls.code}")
    assert not missing, f"README.md's error table lacks these WeChat errcode mappings: {missing}"


def _own_steps() -> dict[str, type[Any]]:
    steps = {name: cls for name, cls in Registry.discover().steps.items() if _own(cls)}
    assert steps, "no built-in step is registered: is wxgate installed (pip install -e .)?"
    return steps


def test_every_step_has_a_row_in_the_steps_table() -> None:
    rows = _table_rows(_section(README, "Built-in steps"))
    missing = sorted(set(_own_steps()) - set(rows))
    assert not missing, f"README.md's steps table has no row for: {missing}"


def test_every_step_option_is_documented_in_its_row() -> None:
    rows = _table_rows(_section(README, "Built-in steps"))
    missing = [
        f"{name}.{option}"
        for name, cls in sorted(_own_steps().items())
        for option in cls.Options.model_fields
        if name in rows and f"`{option}`" not in " | ".join(rows[name])
    ]
    assert not missing, f"README.md's steps table does not mention these options: {missing}"


def test_every_step_is_mentioned_in_the_plugin_guide() -> None:
    missing = sorted(name for name in _own_steps() if f"`{name}`" not in PLUGINS_GUIDE)
    assert not missing, f"docs/plugins.md does not mention these built-in steps: {missing}"


def test_every_storage_and_its_options_are_documented() -> None:
    storage_docs = _section(README, "Configuration")
    storages = {name: cls for name, cls in Registry.discover().storages.items() if _own(cls)}
    assert storages, "no built-in storage is registered"
    missing = [f"storage {name}" for name in sorted(storages) if f"`{name}`" not in storage_docs]
    options: dict[str, type[BaseModel]] = {name: cls.Options for name, cls in storages.items()}
    missing += [
        f"{name}.{option}"
        for name, model in sorted(options.items())
        for option in model.model_fields
        if f"`{option}`" not in storage_docs
    ]
    assert not missing, f"README.md's configuration reference does not mention: {missing}"


def test_every_flow_is_in_the_pipelines_table() -> None:
    rows = _table_rows(_section(README, "Configuration"))
    missing = sorted(set(FLOWS) - set(rows))
    assert not missing, f"README.md's pipelines table has no row for the flows: {missing}"


def test_every_cli_subcommand_is_documented() -> None:
    actions = [a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction)]
    assert actions, "the CLI parser has no subcommands"
    commands = sorted(name for action in actions for name in action.choices)
    cli_docs = _section(README, "CLI")
    missing = [name for name in commands if f"`wxgate {name}" not in cli_docs]
    assert not missing, f"README.md's CLI section does not document: {missing}"


def test_readme_gives_the_two_setup_commands() -> None:
    setup = _section(README, "Set-up")
    for command in ("make run", "make test"):
        assert re.search(rf"^{command}\b", setup, re.MULTILINE), f"README.md's Set-up does not give `{command}`"


def _documented_defaults(model: type[BaseModel], rows: dict[str, list[str]]) -> list[str]:
    """Fields whose numeric default is not the one in their row's Default column."""
    return [
        f"{name}: README {rows[name][1]}, code `{field.default}`"
        for name, field in model.model_fields.items()
        if name in rows
        and isinstance(field.default, int | float)
        and not isinstance(field.default, bool)
        and rows[name][1] != f"`{field.default}`"
    ]


def test_every_server_setting_is_documented() -> None:
    rows = _table_rows(_section(_section(README, "Configuration"), "`server`", level=3))
    missing = sorted(set(ServerConfig.model_fields) - set(rows))
    assert not missing, f"README.md's server table has no row for: {missing}"
    wrong = _documented_defaults(ServerConfig, rows)
    assert not wrong, f"README.md's server table shows other defaults: {wrong}"


def test_every_sandbox_setting_is_documented() -> None:
    rows = _table_rows(_section(_section(README, "Configuration"), "`sandbox`", level=3))
    missing = sorted(set(SandboxConfig.model_fields) - set(rows))
    assert not missing, f"README.md's sandbox table has no row for: {missing}"
    wrong = _documented_defaults(SandboxConfig, rows)
    assert not wrong, f"README.md's sandbox table shows other defaults: {wrong}"


def test_every_app_setting_is_documented() -> None:
    rows = _table_rows(_section(_section(README, "Configuration"), "`apps`", level=3))
    missing = sorted(set(AppConfig.model_fields) - {"name"} - set(rows))  # `name` is the key, not a setting
    assert not missing, f"README.md's apps table has no row for: {missing}"
    wrong = _documented_defaults(AppConfig, rows)
    assert not wrong, f"README.md's apps table shows other defaults: {wrong}"


def test_readme_shows_the_embedded_default_as_it_is() -> None:
    configuration = _section(README, "Configuration")
    match = re.search(r"```yaml\n(server:.*?)```", configuration, re.DOTALL)
    assert match is not None, "README.md's Configuration section does not show the embedded default"
    shown = yaml.safe_load(match.group(1))
    actual = yaml.safe_load(DEFAULT_CONFIG.read_text(encoding="utf-8"))
    assert shown == actual, "README.md's copy of config/gateway.yaml differs from the file (comments aside)"


def test_every_webhooks_setting_is_documented() -> None:
    rows = _table_rows(_section(_section(README, "Configuration"), "`webhooks`", level=3))
    missing = [
        f"{model.__name__}.{name}"
        for model in (WebhooksConfig, EndpointConfig)
        for name in model.model_fields
        if name not in rows
    ]
    assert not missing, f"README.md's webhooks tables have no row for: {missing}"
    wrong = _documented_defaults(WebhooksConfig, rows) + _documented_defaults(EndpointConfig, rows)
    assert not wrong, f"README.md's webhooks tables show other defaults: {wrong}"


def _hook_signature(name: str) -> str:
    """``wxgate_x(a, b)``: the hook's name and its arguments, in the spec's order."""
    spec = getattr(hookspecs, name)
    return f"{name}({', '.join(inspect.signature(spec).parameters)})"


def _hook_sections() -> dict[str, str]:
    """docs/hooks.md's ``## `` sections, keyed by their heading."""
    parts = re.split(r"^## (.+)$", HOOKS_GUIDE, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_every_hook_has_a_section_headed_by_its_signature() -> None:
    assert HOOK_NAMES, "gateway.hookspecs declares no hook"
    headings = list(_hook_sections())
    missing = [
        _hook_signature(name)
        for name in HOOK_NAMES
        if not any(_hook_signature(name) in heading for heading in headings)
    ]
    assert not missing, f"docs/hooks.md has no section headed by these signatures: {missing}"


def test_hooks_guide_documents_only_real_hooks() -> None:
    named = {match.group(1) for heading in _hook_sections() if (match := re.search(r"\b(wxgate_\w+)\(", heading))}
    unknown = sorted(named - set(HOOK_NAMES))
    assert not unknown, f"docs/hooks.md has sections for hooks gateway.hookspecs does not declare: {unknown}"


def test_every_hook_section_describes_its_arguments_and_shows_an_implementation() -> None:
    sections = _hook_sections()
    problems = []
    for name in HOOK_NAMES:
        body = next((text for heading, text in sections.items() if _hook_signature(name) in heading), "")
        arguments = inspect.signature(getattr(hookspecs, name)).parameters
        problems += [f"{name}: argument {arg}" for arg in arguments if f"`{arg}`" not in body]
        if "@hookimpl" not in body or f"def {name}(" not in body:
            problems.append(f"{name}: an example implementation (@hookimpl, def {name}(...))")
    assert not problems, f"docs/hooks.md's hook sections lack: {problems}"


def test_the_guides_link_each_other() -> None:
    assert "docs/hooks.md" in README, "README.md does not link docs/hooks.md"
    assert "docs/plugins.md" in README, "README.md does not link docs/plugins.md"
    assert "(hooks.md" in PLUGINS_GUIDE, "docs/plugins.md does not link hooks.md"


def test_security_table_names_tests_that_exist() -> None:
    table = _section(
        (ROOT / "SECURITY.md").read_text(encoding="utf-8"), "Each threat, its control, and the test that proves it"
    )
    named = 0
    for line in table.splitlines():
        if not line.startswith("| ") or "tests/" not in line:
            continue
        cell = line.rstrip(" |").rsplit(" | ", 1)[-1]
        for module, rest in re.findall(r"`(tests/[a-z_]+\.py)(::[A-Za-z_:]+)?`", cell):
            source = (ROOT / module).read_text(encoding="utf-8")
            names = [part for part in rest.split("::") if part] + re.findall(r"`(test_[a-z0-9_]+)`", cell)
            for name in names:
                assert re.search(rf"(def|class) {name}\b", source), f"SECURITY.md names {module}::{name}, not found"
                named += 1
    assert named >= 20, f"only {named} tests named in SECURITY.md's table"


# --- docs/operations.md: the operator's guide ------------------------------------------------


def test_every_metric_has_a_row_in_the_operations_metrics_table() -> None:
    from gateway.metrics import OUTBOX_AGE, Metrics

    rows = _table_rows(_section(OPERATIONS, "Health, readiness and metrics", doc="docs/operations.md"))
    exported = {OUTBOX_AGE}
    for family in Metrics().registry.collect():
        exported.add(family.name + "_total" if family.type == "counter" else family.name)
    missing = sorted(exported - set(rows))
    assert not missing, f"docs/operations.md's metrics table has no row for: {missing}"
    unknown = sorted(name for name in rows if name.startswith("wxgate_") and name not in exported)
    assert not unknown, f"docs/operations.md's metrics table lists metrics the gateway does not export: {unknown}"


def test_operations_guide_documents_the_server_keys_for_running_behind_proxies() -> None:
    for heading, key in (
        ("Client address: `server.trusted_proxies`", "trusted_proxies"),
        ("The admin listener: `server.admin`", "admin"),
        ("Timeouts and limits", "header_timeout"),
    ):
        assert key in ServerConfig.model_fields, f"server.{key} is documented but not a setting"
        assert key in _section(OPERATIONS, heading, doc="docs/operations.md")


def test_operations_guide_names_every_file_of_the_deployment_kit() -> None:
    shipped = sorted(str(path.relative_to(ROOT)) for path in (ROOT / "deploy").rglob("*") if path.is_file())
    assert shipped, "deploy/ is empty"
    missing = [name for name in shipped if name not in OPERATIONS]
    assert not missing, f"docs/operations.md does not mention: {missing}"


def test_relative_links_of_readme_and_operations_guide_resolve() -> None:
    broken = []
    for doc, text in (("README.md", README), ("docs/operations.md", OPERATIONS)):
        base = (ROOT / doc).parent
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if "://" not in target and not (base / target).exists():
                broken.append(f"{doc}: {target}")
    assert not broken, f"links to files that do not exist: {broken}"


def test_links_to_operations_sections_name_real_headings() -> None:
    anchors = {
        re.sub(r"[^a-z0-9 _-]", "", heading.lower()).replace(" ", "-")
        for heading in re.findall(r"^#+ (.+)$", OPERATIONS, re.MULTILINE)
    }
    wanted = set(re.findall(r"docs/operations\.md#([a-z0-9_-]+)", README))
    assert wanted, "README.md links no section of docs/operations.md"
    assert not wanted - anchors, f"README.md links sections docs/operations.md lacks: {sorted(wanted - anchors)}"


def test_readme_speaks_to_users() -> None:
    """No internal tracker numbers: a reader of the README cannot look them up."""
    found = re.findall(r"(?i)\b(?:issue|ticket|bug)\s*#?\d+|(?<![\w&/])#\d+\b", README)
    assert not found, f"README.md mentions internal numbers: {found}"


# Sections of a wxgate file: a ```yaml block with only these top-level keys is (part of) one.
_CONFIG_SECTIONS = {"server", "sandbox", "storage", "webhooks", "pipelines", "apps"}


def _yaml_blocks() -> list[tuple[str, int, str]]:
    found = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = path.read_text(encoding="utf-8")
        for match in re.finditer(r"^```ya?ml\n(.*?)^```$", text, re.MULTILINE | re.DOTALL):
            found.append((str(path.relative_to(ROOT)), text.count("\n", 0, match.start(1)) + 1, match.group(1)))
    return found


def _example_value(name: str) -> str:
    """A value of the right shape for a ``${VAR}`` a doc example leaves to the operator."""
    if name.endswith("_URL"):
        return "https://hooks.example.com/wxgate"
    if name.endswith("_URI"):
        return "mongodb://db.example.com:27017/"
    if name.endswith("STORAGE_KEY"):
        return "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
    return "an-example-value-of-32-characters"


def test_every_yaml_block_of_the_docs_parses_and_its_wxgate_sections_validate() -> None:
    """What a reader pastes must load: YAML syntax (an unquoted ${VAR} inside {...} is not), and
    the sections of a wxgate file as the gateway checks them, with any unset variable given a value."""
    from gateway.config import _ENV_REF, parse_config
    from gateway.errors import ConfigError

    blocks = _yaml_blocks()
    assert len(blocks) >= 5, "the docs' ```yaml blocks were not found"
    failures, checked = [], 0
    for doc, line, code in blocks:
        where = f"{doc}:{line}"
        try:
            value = yaml.safe_load(code)
        except yaml.YAMLError as exc:
            failures.append(f"{where}: not valid YAML: {exc}")
            continue
        keys = set(value) if isinstance(value, dict) else set()
        if not keys or not keys <= _CONFIG_SECTIONS:
            continue
        env = {m.group(1): _example_value(m.group(1)) for m in _ENV_REF.finditer(code) if m.group(2) is None}
        try:
            parse_config(code, where, env=env, sections=tuple(keys))
            checked += 1
        except ConfigError as exc:
            failures.append(str(exc))
    assert not failures, "\n".join(failures)
    assert checked >= 5, f"only {checked} blocks were checked as wxgate configuration"


def test_an_unquoted_variable_in_a_flow_mapping_is_refused_with_the_fix() -> None:
    from gateway.config import parse_config
    from gateway.errors import ConfigError

    text = "server:\n  admin: {host: 127.0.0.1, port: 8081, token: ${WXGATE_ADMIN_TOKEN:-}}\n"
    with pytest.raises(ConfigError) as refused:
        parse_config(text, "wxgate.yaml", env={}, sections=("server",))
    assert str(refused.value).startswith("wxgate.yaml:2:")
    assert 'quote a ${VAR} inside {…} or […]: token: "${WXGATE_ADMIN_TOKEN:-}"' in str(refused.value)
    quoted = text.replace("${WXGATE_ADMIN_TOKEN:-}", '"${WXGATE_ADMIN_TOKEN:-}"')
    admin = parse_config(quoted, "wxgate.yaml", env={}, sections=("server",)).server.admin
    assert admin is not None
    assert admin.port == 8081
    # the hint for a non-loopback admin without a token shows the quoted form, which fits both styles
    with pytest.raises(ConfigError) as open_admin:
        parse_config("server:\n  admin: {host: 0.0.0.0}\n", "wxgate.yaml", env={}, sections=("server",))
    assert 'token: "${WXGATE_ADMIN_TOKEN}"' in str(open_admin.value)
