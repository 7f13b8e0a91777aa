"""gateway.pytest_plugin, as a plugin's suite uses it: a session in another process (the
plugin's state is per process) whose test leaks a known app secret must fail with the
plugin's message; the same session without the leak passes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SECRET = "leaky-secret-0123"

# {leak} is the step's last line: where the app secret goes, if anywhere.
SUITE = '''
from typing import ClassVar

from gateway import Context, Step, StepOptions
from gateway.config import Config, parse_config
from gateway.registry import Registry
from gateway.testing import GatewayTestCase


class Leaky(Step[StepOptions]):
    name: ClassVar[str] = "leaky"
    version: ClassVar[str] = "1.0.0"
    Options: ClassVar[type[StepOptions]] = StepOptions

    async def __call__(self, ctx: Context) -> None:
        secret = ctx.app.secret.get_secret_value()
        {leak}


class LeakyTest(GatewayTestCase):
    config_text = """
pipelines:
  login: [code2session, leaky, issue_session]
apps:
  demo: {{appid: wx0000000000demo0, secret: {secret}, upstream: sandbox}}
"""

    def get_config(self) -> Config:
        registry = Registry.discover(extra_steps={{"leaky": Leaky}})
        assert self.config_text is not None
        return parse_config(self.config_text, "<test config>", registry=registry, env=self.env)

    def test_login(self) -> None:
        assert self.login("someone")["token"]
'''

LEAKS = {
    "response": 'ctx.response["note"] = f"it is {secret}"',
    # a key the redaction does not know: only the plugin's check stands in the way
    "log line": 'ctx.log.info("leaky_step", note=secret)',
}


def run_suite(tmp_path: Path, leak: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_leaky.py").write_text(SUITE.format(leak=leak, secret=SECRET))
    # Its own rootdir: neither wxgate's setup.cfg (testpaths, addopts) nor its conftest.py applies.
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "gateway.pytest_plugin", "-p", "no:cacheprovider", "test_leaky.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        # only the plugin named: installed ones (hypothesis, schemathesis) cost seconds to load
        env={**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"},
    )


@pytest.mark.parametrize("where", sorted(LEAKS))
def test_a_leaked_secret_fails_the_session(tmp_path: Path, where: str) -> None:
    result = run_suite(tmp_path, LEAKS[where])
    output = result.stdout + result.stderr
    assert "1 passed" in output, output  # the test itself passed: the plugin failed the session
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, output
    assert f"LEAK: 1 secrets appeared in responses or log lines of this run: ['{SECRET[:4]}...']" in output


def test_a_session_without_a_leak_passes(tmp_path: Path) -> None:
    result = run_suite(tmp_path, 'ctx.log.info("leaky_step", note=len(secret))')
    output = result.stdout + result.stderr
    assert result.returncode == pytest.ExitCode.OK, output
    assert "1 passed" in output, output
    assert "LEAK" not in output


def test_this_suite_runs_under_the_plugin(pytestconfig: pytest.Config) -> None:
    assert pytestconfig.pluginmanager.has_plugin("gateway.pytest_plugin")
