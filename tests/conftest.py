"""Suite-wide fixtures: a MongoDB wire-protocol server, JSON logs into memory, and at
the end, no secret in any log line or answer of the whole run."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator

import pytest

from gateway.logs import configure_logging
from gateway.testing import LeakWatch

SUITE_LOG = io.StringIO()


def pytest_configure(config: pytest.Config) -> None:
    configure_logging("json", stream=SUITE_LOG)


@pytest.fixture(scope="session")
def mongo_uri() -> Iterator[str]:
    """The server .ci/run started (WXGATE_TEST_MONGO_URI), or one started here."""
    given = os.environ.get("WXGATE_TEST_MONGO_URI")
    if given:
        yield given
        return
    from wxgate_plugins.storages.embedded_mongo import EmbeddedMongo

    server = EmbeddedMongo(db="memory")
    yield server.start()
    server.stop()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not LeakWatch.secrets:
        return
    leaks = LeakWatch.leaks(LeakWatch.bodies, SUITE_LOG.getvalue())
    if leaks:
        print(f"\nLEAK: {len(leaks)} secrets appeared in responses or log lines of this run: {leaks}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
