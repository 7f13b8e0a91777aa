"""A pytest plugin: the session fails if a secret appeared in a response or a log line.

``GatewayTestCase`` (:mod:`gateway.testing`) records in :class:`~gateway.testing.LeakWatch`
the app secrets, session keys and access tokens of every test, the answers the test client
got, and the login tokens and phone numbers sent by design. This plugin checks once, when
the session ends, that no secret is in any answer or log line of the run, and no login token
or phone number in any log line. A leak fails the run (exit status 1) with
``LEAK: N secrets appeared in responses or log lines of this run: [...]``, showing the first
four characters of each.

Enable it in the suite, in the ``conftest.py`` at its top (pytest accepts ``pytest_plugins``
only there)::

    pytest_plugins = ["gateway.pytest_plugin"]

or for one run, ``pytest -p gateway.pytest_plugin``. wxgate's own suite and the example
plugin's do the former. It is not a ``pytest11`` entry point, on purpose: it takes over
structlog's and the root logger's output for the whole session and can fail it, which no
suite should get just because wxgate is installed in its environment.

While enabled, wxgate's logging is JSON lines into :data:`SUITE_LOG` (in memory, so the run's
output stays readable), which is what the check reads. A test that needs the log as it is
written reads ``SUITE_LOG``; one that configures logging its own way calls
:func:`log_to_suite` afterwards, or its lines escape the check. ``structlog.testing.capture_logs``
restores the configuration by itself.
"""

from __future__ import annotations

import io

import pytest

from gateway.logs import configure_logging
from gateway.testing import LeakWatch

SUITE_LOG = io.StringIO()


def log_to_suite() -> None:
    """wxgate's logging as JSON lines into :data:`SUITE_LOG`, as the plugin sets it up."""
    configure_logging("json", stream=SUITE_LOG)


def pytest_configure(config: pytest.Config) -> None:
    log_to_suite()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not LeakWatch.secrets:
        return
    leaks = LeakWatch.leaks(LeakWatch.bodies, SUITE_LOG.getvalue())
    if leaks:
        print(f"\nLEAK: {len(leaks)} secrets appeared in responses or log lines of this run: {leaks}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
