"""The files ``wxgate new-plugin`` writes, as text: a module ships in any wheel of wxgate
without package-data settings. ``__NAME__``-style markers are replaced (see
:mod:`gateway.cli.new_plugin`); each file is kept as ruff would format it, since the
generated package is checked with ruff as generated."""

from __future__ import annotations

PYPROJECT = """\
[build-system]
requires = ["setuptools>=68", "wheel"]
build-backend = "setuptools.build_meta"

[project]
name = "__DIST__"
version = "0.1.0"
description = "A wxgate plugin: the __STEP__ step and a hook module"
requires-python = ">=3.11"
dependencies = ["__WXGATE_REQUIREMENT__"]

[project.optional-dependencies]
test = ["pytest>=8", "mypy>=1.10", "ruff>=0.6"]

# All wxgate needs to find the plugin: one line per step (its YAML name, equal to the
# class's `name`), one per hook module. Entry points are read from the installed
# metadata: after editing them, run `pip install -e .` again.
[project.entry-points."wxgate.steps"]
__STEP__ = "__PACKAGE__.step:__CLASS__"

[project.entry-points."wxgate.hooks"]
__STEP__ = "__PACKAGE__.hooks"

[tool.setuptools]
packages = ["__PACKAGE__"]

[tool.setuptools.package-data]
__PACKAGE__ = ["py.typed"]

[tool.pytest.ini_options]
testpaths = ["tests"]

[tool.mypy]
files = ["__PACKAGE__", "tests"]
strict = true
# Step options are pydantic models: its plugin types their constructors from the fields.
plugins = ["pydantic.mypy"]
__MYPY_PATH__
[[tool.mypy.overrides]]
# wxgate is type-checked by its own project: read its types, report nothing of its code.
module = ["gateway", "gateway.*"]
follow_imports = "silent"

[tool.pydantic-mypy]
init_forbid_extra = true
init_typed = true

[tool.ruff]
line-length = 120
target-version = "py311"

[tool.ruff.lint]
select = ["E", "F", "W", "I", "B", "UP", "SIM", "RUF"]
"""

# Written into [tool.mypy] when wxgate is installed from a checkout (pip install -e).
MYPY_PATH = """\
# wxgate is installed from a checkout (pip install -e): mypy cannot follow setuptools'
# editable import hook, so it reads wxgate's typed sources from the checkout. Remove
# this line once wxgate is installed from a package index.
mypy_path = "__CHECKOUT__"
"""

INIT = '''\
"""__DIST__: the __STEP__ step and a hook module for wxgate."""
'''

STEP = '''\
"""__STEP__: adds the phone number's region to the answer. A starting point: make it yours."""

from __future__ import annotations

from typing import ClassVar

from gateway import Context, Step, StepOptions
from pydantic import Field


class __CLASS__Options(StepOptions):
    """The step's YAML options: `- __STEP__: {unknown: "elsewhere"}`. Unknown keys are refused."""

    regions: dict[str, str] = Field(
        default_factory=lambda: {"86": "mainland China", "852": "Hong Kong", "853": "Macao"},
        description="Region names by country calling code.",
    )
    unknown: str = Field("elsewhere", description="The region of any other country code.")
    field: str = Field("region", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="The answer's key.")


class __CLASS__(Step[__CLASS__Options]):
    """Loading a configuration checks that the step comes after one that gives a phone number."""

    name: ClassVar[str] = "__STEP__"
    # what it reads (ctx.data with a phone number) and what it adds (a key of ctx.response)
    needs = ("phone",)
    gives = ("response",)

    async def __call__(self, ctx: Context) -> None:
        country = ctx.data.get("countryCode")
        region = self.options.regions.get(country, self.options.unknown) if isinstance(country, str) else None
        ctx.response[self.options.field] = region or self.options.unknown
'''

HOOKS = '''\
"""Hooks: observers of the gateway's lifecycle; they cannot change a request (wxgate's docs/hooks.md)."""

from __future__ import annotations

from collections import Counter

import structlog
from gateway.hookspecs import hookimpl

log = structlog.get_logger("__PACKAGE__")

# per process: with `wxgate serve --processes N`, each worker counts its own
PHONES_BY_COUNTRY: Counter[str] = Counter()


@hookimpl
def wxgate_phone_bound(app: str, country_code: str) -> None:
    """Runs inline, before the answer is sent: keep it quick (an `async def` runs in the background)."""
    PHONES_BY_COUNTRY[country_code] += 1
    log.info("__PACKAGE___phone_bound", app=app, country_code=country_code)
'''

CONFTEST = '''\
"""Fails the run if a secret of the tests' gateways appeared in an answer or a log line."""

pytest_plugins = ["gateway.pytest_plugin"]
'''

TESTS = '''\
"""The __STEP__ step alone, in a sandbox flow, and the hook, with wxgate's harness (gateway.testing)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from gateway.config import parse_config
from gateway.errors import ConfigError
from gateway.registry import Registry
from gateway.testing import GatewayTestCase, make_context

from __PACKAGE__.hooks import PHONES_BY_COUNTRY
from __PACKAGE__.step import __CLASS__, __CLASS__Options

CONFIG = """
pipelines:
  login: [code2session, persist_user, issue_session]
  phone:
    - check_session
    - decrypt: {kind: phone}
    - __STEP__: {unknown: somewhere else}
    - respond
apps:
  demo: {appid: wx0000000000demo0, secret: demo-secret-123, upstream: sandbox}
"""


def answer(step: __CLASS__, data: dict[str, Any]) -> dict[str, Any]:
    ctx = make_context(data=data)
    asyncio.run(step(ctx))
    return ctx.response


def test_the_region_of_a_country_code() -> None:
    step = __CLASS__(__CLASS__Options())
    assert answer(step, {"purePhoneNumber": "13800138000", "countryCode": "86"}) == {"region": "mainland China"}
    assert answer(step, {"countryCode": "1"}) == {"region": "elsewhere"}


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="field"):
        __CLASS__Options(field="not a key")


def test_found_through_its_entry_point() -> None:
    assert Registry.discover().steps["__STEP__"] is __CLASS__


def test_a_pipeline_with_the_step_before_decrypt_is_refused() -> None:
    wrong = CONFIG.replace("    - decrypt: {kind: phone}\\n", "")  # and decrypt after the step:
    wrong = wrong.replace("    - respond", "    - decrypt\\n    - respond")
    with pytest.raises(ConfigError, match="__STEP__ needs a phone number: put it after decrypt or phone_code"):
        parse_config(wrong, "wrong.yaml", env={})


class FlowTest(GatewayTestCase):
    config_text = CONFIG

    def test_the_answer_has_the_region_and_the_hook_counted(self) -> None:
        before = PHONES_BY_COUNTRY["86"]
        token = self.login("alice")["token"]
        device = self.get_phone_number("alice")
        fields = {"encryptedData": device["encryptedData"], "iv": device["iv"]}
        status, body, _ = self.call("/v1/demo/phone", fields, token=token)
        assert status == 200, body
        assert body["region"] == "mainland China"
        assert PHONES_BY_COUNTRY["86"] == before + 1
        # a hook that raises never fails the request: the log is where it shows
        self.log_events.assert_none("hook_failed")
'''

README = """\
# __DIST__

A [wxgate](https://pypi.org/project/wxgate/) plugin: the `__STEP__` step, which adds the phone number's region
to the answer, and a hook module that counts bound phones per country. Generated by `wxgate new-plugin`: make it
yours.

## Use

Install it into the gateway's environment, then name the step in a pipeline, after a step that gives a phone
number (`decrypt` with `kind: phone`, or `phone_code`):

```
pip install -e .
```

```yaml
pipelines:
  phone:
    - check_session
    - decrypt: {kind: phone}
    - __STEP__: {unknown: elsewhere}
    - respond
```

The hook module needs no configuration: every gateway process loads it. Entry points (in `pyproject.toml`) are
read from the installed metadata: after editing them, run `pip install -e .` again.

- `wxgate validate CONFIG` checks the file: the step's options, and that it comes after what it `needs`.
- `wxgate pipelines CONFIG` shows every step with its options and what it needs and gives.
- `wxgate dry-run CONFIG --app demo --flow phone` runs the flow against the sandbox and shows each step.
- `wxgate version` lists every installed step and hook module and where each comes from.

## Develop

```
pip install -e '.[test]'
pytest           # the step alone, in a sandbox flow (gateway.testing), and the hook
mypy             # strict, with the pydantic plugin (pyproject.toml)
ruff check . && ruff format --check .
```

If wxgate itself is installed from a checkout (`pip install -e`), mypy cannot follow setuptools' editable import
hook: `[tool.mypy] mypy_path` then names the checkout (`wxgate new-plugin` writes it when that is the case), or run
`MYPYPATH=/path/to/wxgate mypy`.
"""

GITIGNORE = """\
__pycache__/
*.egg-info/
build/
.mypy_cache/
.pytest_cache/
.ruff_cache/
"""
