"""Suite-wide set-up: a MongoDB wire-protocol server, and gateway.pytest_plugin: JSON logs
into memory and, at the end, no secret in any log line or answer of the whole run."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

pytest_plugins = ["gateway.pytest_plugin"]


@pytest.fixture(scope="session")
def mongo_uri() -> Iterator[str]:
    """The server .ci/run started (WXGATE_TEST_MONGO_URI), or one started here."""
    given = os.environ.get("WXGATE_TEST_MONGO_URI")
    if given:
        yield given
        return
    from tests.helpers import start_embedded_mongo

    server = start_embedded_mongo("memory")
    yield server.uri
    server.stop()


@pytest.fixture
def receiver(request: pytest.FixtureRequest) -> Iterator[None]:
    """A signed-webhook receiver for a test class, as ``self.crm`` (use with
    ``@pytest.mark.usefixtures("receiver")``)."""
    from tests.webhook_receiver import Receiver  # not at collection: it imports the gateway

    crm = Receiver().start()
    request.cls.crm = crm
    yield
    crm.stop()
