"""Suite-wide: JSON logs into memory, and at the end, no secret in any log line or answer."""

from __future__ import annotations

import io

import pytest

from gateway.logs import configure_logging
from gateway.testing import LeakWatch

SUITE_LOG = io.StringIO()


def pytest_configure(config: pytest.Config) -> None:
    configure_logging("json", stream=SUITE_LOG)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not LeakWatch.secrets:
        return
    leaks = LeakWatch.leaks(LeakWatch.bodies, SUITE_LOG.getvalue())
    if leaks:
        print(f"\nLEAK: {len(leaks)} secrets appeared in responses or log lines of this run: {leaks}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
