"""The Python examples of docs/hooks.md and docs/plugins.md, run.

Each hook example is executed as a module and registered with wxgate's hook manager, so
pluggy checks its hook names and arguments as it would at start-up, and then called with
arguments of the hook's types. The plugin guide's step and hook module are the example
package's files, character for character; its test examples run against real gateways, and
its webhook fragment in a step. A ```python block no test here runs fails
test_every_python_block_is_run: run it, or list it in NOT_RUN with the reason.
"""

from __future__ import annotations

import ast
import asyncio
import difflib
import inspect
import re
import socket
import sys
import textwrap
import unittest
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath
from types import ModuleType
from typing import Any

import pytest
from pydantic import SecretStr
from wxgate_blocklist.step import PhoneBlocklist

from gateway import hookspecs
from gateway.config import EndpointConfig, WebhooksConfig
from gateway.events import Events
from gateway.hooks import Hooks
from gateway.hookspecs import HOOK_NAMES
from gateway.registry import Registry
from gateway.testing import make_context, make_session
from tests.helpers import ROOT

EXAMPLE = ROOT / "examples" / "wxgate-plugin-example"


@dataclass(frozen=True)
class Block:
    doc: str
    line: int  # of the block's first line of code in ``doc``
    code: str

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}"


def python_blocks(doc: str) -> list[Block]:
    text = (ROOT / doc).read_text(encoding="utf-8")
    return [
        Block(doc, text.count("\n", 0, match.start(1)) + 1, match.group(1))
        for match in re.finditer(r"^```python\n(.*?)^```$", text, re.MULTILINE | re.DOTALL)
    ]


HOOKS_BLOCKS = python_blocks("docs/hooks.md")
PLUGINS_BLOCKS = python_blocks("docs/plugins.md")

# The blocks of docs/plugins.md, each found by a line only it has.
STEP_MODULE = "class PhoneBlocklist(Step[BlocklistOptions]):"
HOOK_MODULE = "NEW_USERS: Counter[str] = Counter()"
EMIT = "await ctx.events.emit("
STEP_TESTS = "def test_blocked_prefix_is_refused_with_the_plugin_error"
FLOW_TEST = "def test_blocked_number_is_refused"
BEFORE_PACKAGING = "def get_config(self) -> Config:"
HOOK_TEST = "class NewUsersTest(GatewayTestCase):"
HOOK_IMPLEMENTATION = "@hookimpl"  # any block of either guide: test_hook_example_registers_and_runs
RUN = (STEP_MODULE, HOOK_MODULE, EMIT, STEP_TESTS, FLOW_TEST, BEFORE_PACKAGING, HOOK_TEST, HOOK_IMPLEMENTATION)
# Blocks no test can run (by a line only they have), with the reason. None today.
NOT_RUN: dict[str, str] = {}


def the(blocks: list[Block], containing: str) -> Block:
    found = [block for block in blocks if containing in block.code]
    assert len(found) == 1, f"{len(found)} python blocks contain {containing!r}: {[str(b) for b in found]}"
    return found[0]


def load(block: Block, namespace: Mapping[str, Any] | None = None) -> ModuleType:
    """The block executed as a module; ``namespace``: the names it takes from the text around it."""
    name = f"docs_example_{PurePath(block.doc).stem}_{block.line}"
    module = ModuleType(name)
    module.__dict__.update(namespace or {})
    # pydantic and dataclasses resolve postponed annotations through the module
    sys.modules[name] = module
    try:
        # padded, so that a traceback names the line of the guide
        code = compile("\n" * (block.line - 1) + block.code, str(ROOT / block.doc), "exec")
        exec(code, module.__dict__)
    finally:
        del sys.modules[name]
    return module


def differences(shown: str, source: Path) -> str:
    lines = difflib.unified_diff(
        source.read_text(encoding="utf-8").splitlines(), shown.splitlines(), str(source), "the guide", lineterm=""
    )
    return "\n".join(lines)


def test_every_python_block_is_run() -> None:
    unclaimed = [
        f"{block}: {block.code.splitlines()[0]}"
        for block in HOOKS_BLOCKS + PLUGINS_BLOCKS
        if not any(mark in block.code for mark in (*RUN, *NOT_RUN))
    ]
    assert not unclaimed, f"python blocks no test in {__name__} runs: {unclaimed}"


# --- hook examples -------------------------------------------------------------------

HOOK_EXAMPLES = [block for block in HOOKS_BLOCKS + PLUGINS_BLOCKS if HOOK_IMPLEMENTATION in block.code]

# One value of each hook argument, of the type its hookspec gives.
ARGUMENTS: dict[str, Any] = {
    "config_digest": "0123456789abcdef",
    "digest": "0123456789abcdef",
    "previous_digest": "fedcba9876543210",
    "apps": ["demo"],
    "pid": 4242,
    "request_id": "docs-example",
    "app": "demo",
    "appid": "wx0000000000demo0",
    "flow": "login",
    "client_ip": "127.0.0.1",
    "step": "code2session",
    "error": "storage_unavailable",  # one the alerting example pages on, so its log call runs too
    "status": 503,
    "duration_ms": 12.5,
    "steps": {"code2session": 10.0, "issue_session#2": 1.5},
    "openid": "o-docs-example",
    "unionid": None,
    "first_login": True,
    "masked_phone": "138****5678",
    "country_code": "86",
}


def test_the_example_arguments_cover_every_hook() -> None:
    missing = {
        f"{name}({argument})"
        for name in HOOK_NAMES
        for argument in inspect.signature(getattr(hookspecs, name)).parameters
        if argument not in ARGUMENTS
    }
    assert not missing, f"ARGUMENTS has no value for: {sorted(missing)}"


async def call_every_implementation(hooks: Hooks) -> None:
    """As the gateway calls them (each with the arguments it declares, coroutines awaited
    within the hook timeout), but raising what they raise; shutdown last, as in a process."""
    for name in sorted(hooks.active, key=lambda hook: hook == "wxgate_shutdown"):
        for impl in getattr(hooks.pm.hook, name).get_hookimpls():
            result = impl.function(**{argument: ARGUMENTS[argument] for argument in impl.argnames})
            if inspect.isawaitable(result):
                await asyncio.wait_for(result, hooks.timeout)


@pytest.mark.parametrize("block", HOOK_EXAMPLES, ids=str)
def test_hook_example_registers_and_runs(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in re.findall(r"os\.environ\.get\(\"(\w+)\"", block.code):
        monkeypatch.delenv(variable, raising=False)  # unset, the examples call no outside service
    module = load(block)
    if hasattr(module, "Path"):  # the wxgate_shutdown example writes a file: into tmp_path, not /tmp
        monkeypatch.setattr(module, "Path", lambda path: tmp_path / PurePath(path).name)
    defined = {name for name, value in vars(module).items() if name.startswith("wxgate_") and callable(value)}
    assert defined, f"{block} defines no wxgate_* function"
    # what the gateway does with an installed hook module: a wrong name or argument raises here
    hooks = Hooks(plugins=[module], load_entry_points=False)
    assert defined <= hooks.active, f"{block}: not marked @hookimpl: {sorted(defined - hooks.active)}"
    try:
        asyncio.run(call_every_implementation(hooks))
    finally:
        for value in vars(module).values():
            if isinstance(value, socket.socket):
                value.close()
    if hasattr(module, "Path"):
        assert list(tmp_path.iterdir()), f"{block} wrote no file"


def _body(module: ast.Module) -> list[str]:
    """The module's statements without its docstring and ``from __future__`` imports."""
    statements = module.body[1:] if ast.get_docstring(module) is not None else module.body
    return [
        ast.dump(statement)
        for statement in statements
        if not (isinstance(statement, ast.ImportFrom) and statement.module == "__future__")
    ]


def test_the_hooks_guides_plugin_is_the_example_packages_hook() -> None:
    """docs/hooks.md: "examples/wxgate-plugin-example/ ships exactly this hook"."""
    shown = the(HOOKS_BLOCKS, HOOK_MODULE).code
    source = EXAMPLE / "wxgate_blocklist" / "hooks.py"
    assert _body(ast.parse(shown)) == _body(ast.parse(source.read_text(encoding="utf-8"))), differences(shown, source)


# --- docs/plugins.md ------------------------------------------------------------------


def test_the_guides_step_is_the_example_packages_step() -> None:
    shown = the(PLUGINS_BLOCKS, STEP_MODULE).code
    source = EXAMPLE / "wxgate_blocklist" / "step.py"
    assert shown == source.read_text(encoding="utf-8"), differences(shown, source)
    assert Registry.discover().steps["phone_blocklist"] is PhoneBlocklist  # the file shown is the step installed


def test_the_guides_hook_module_is_the_example_packages() -> None:
    shown = the(PLUGINS_BLOCKS, HOOK_MODULE).code
    source = EXAMPLE / "wxgate_blocklist" / "hooks.py"
    assert shown == source.read_text(encoding="utf-8"), differences(shown, source)


def test_the_webhook_fragment_queues_its_event_in_a_step() -> None:
    block = the(PLUGINS_BLOCKS, EMIT)
    # a fragment of a step's __call__: given the names it uses, in an async def of its own
    wrapper = "async def fragment(ctx, session, key):\n" + textwrap.indent(block.code, "    ") + "    return event_id\n"
    module = load(Block(block.doc, block.line - 1, wrapper))
    memory = Registry.discover().storages["memory"]
    storage = memory(memory.Options())
    endpoint = EndpointConfig(name="crm", url="http://127.0.0.1:9/hook", secret=SecretStr("s" * 16))
    ctx = make_context(storage=storage, events=Events(storage, WebhooksConfig(endpoints=[endpoint])))
    session = make_session(openid="o-blocked")

    async def run() -> tuple[str, list[Any]]:
        event_id = await module.fragment(ctx, session, "request-1")
        return event_id, await storage.list_events(None, 10)

    event_id, queued = asyncio.run(run())
    assert [(event.id, event.type) for event in queued] == [(f"{event_id}:crm", "acme.blocked")]
    assert queued[0].payload["openid"] == "o-blocked"
    assert queued[0].payload["reason"] == "prefix"


def run_test_case(cls: type[unittest.TestCase]) -> None:
    suite = unittest.defaultTestLoader.loadTestsFromTestCase(cls)
    assert suite.countTestCases(), f"{cls.__name__} has no test"
    result = unittest.TestResult()
    suite.run(result)
    problems = [f"{test.id()}:\n{trace}" for test, trace in result.errors + result.failures]
    assert not problems, "\n".join(problems)
    assert result.testsRun == suite.countTestCases()


def test_the_step_tests_pass() -> None:
    module = load(the(PLUGINS_BLOCKS, STEP_TESTS))
    tests = [value for name, value in vars(module).items() if name.startswith("test_") and callable(value)]
    assert len(tests) >= 2
    for test in tests:
        test()


def test_the_flow_tests_pass() -> None:
    flow = load(the(PLUGINS_BLOCKS, FLOW_TEST))
    run_test_case(flow.BlocklistFlowTest)
    # "config_text and the tests as above, plus": its GatewayTestCase is the class above,
    # and PhoneBlocklist the step under test
    before_packaging = load(
        the(PLUGINS_BLOCKS, BEFORE_PACKAGING),
        {"GatewayTestCase": flow.BlocklistFlowTest, "PhoneBlocklist": PhoneBlocklist},
    )
    assert "get_config" in vars(before_packaging.BlocklistFlowTest)
    run_test_case(before_packaging.BlocklistFlowTest)
    # "as the example's test shows": GatewayTestCase imported as in the blocks above
    hook = load(the(PLUGINS_BLOCKS, HOOK_TEST), {"GatewayTestCase": flow.GatewayTestCase})
    run_test_case(hook.NewUsersTest)
