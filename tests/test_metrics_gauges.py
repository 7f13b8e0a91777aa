"""The outbox gauges: a scrape of /metrics sends nothing to the storage, one background
task per process reads the counts at most once per interval (and, idle, in the place of
an outbox poll), the scrape shows the last values and their age, and a failing storage
is logged without breaking scrapes."""

from __future__ import annotations

import asyncio
import inspect
import itertools
import time
import uuid
from typing import Any
from unittest import mock

from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from gateway.errors import StorageUnavailable
from gateway.metrics import OUTBOX_REFRESH_SECONDS, OutboxGaugeRefresher
from gateway.registry import Registry
from gateway.storage import OutboxEvent, Storage
from gateway.testing import GatewayTestCase

CONFIG = """
storage: {plugin: memory}
pipelines:
  login: [code2session, persist_user, issue_session]
apps:
  demo: {appid: wx0000000000demo0, secret: demo-secret-123, upstream: sandbox}
"""

# With these, the delivery loop polls the outbox ten times a second: the budget to keep
# is one storage command per poll (the production figures, 1 s and 15 s, scaled down).
WEBHOOK_CONFIG = """
storage: {plugin: memory}
webhooks:
  poll_interval: 0.1
  endpoints:
    - {name: crm, url: "http://127.0.0.1:9/hook", secret: "crm-secret-0123456789"}
pipelines:
  login: [code2session, persist_user, issue_session]
apps:
  demo: {appid: wx0000000000demo0, secret: demo-secret-123, upstream: sandbox}
"""

# Storage methods that are not commands sent to the backend.
LIFECYCLE = {"start", "close", "before_fork"}


class Commands:
    """Every storage command of the test's gateway, with when it was sent; ``failure``
    makes count_events raise it. The patch counts every memory storage in the process, so
    only ``storage``'s commands are kept: in one full run under load, claims came from some
    other gateway's delivery loop (these tests' own has no endpoint) and failed three tests."""

    def __init__(self) -> None:
        self.storage: Storage | None = None  # the test's gateway's, once it exists
        self.calls: list[tuple[str, float, Storage]] = []
        self.failure: BaseException | None = None

    @property
    def sent(self) -> list[tuple[str, float]]:
        return [(name, at) for name, at, storage in self.calls if storage is self.storage or self.storage is None]

    def since(self, mark: int) -> list[str]:
        return [name for name, _ in self.sent[mark:]]

    def times(self, name: str) -> list[float]:
        return [at for sent, at in self.sent if sent == name]


class GaugeTestCase(GatewayTestCase):
    config_text = CONFIG
    refresh_seconds = OUTBOX_REFRESH_SECONDS

    def setUp(self) -> None:
        # Before the gateway exists, so that its very first storage command is counted too.
        self.commands = Commands()
        memory = Registry.discover().storages["memory"]
        for name, method in vars(Storage).items():
            if inspect.iscoroutinefunction(method) and name not in LIFECYCLE:
                self.enterContext(mock.patch.object(memory, name, self._counted(name, getattr(memory, name))))
        self.enterContext(mock.patch.object(OutboxGaugeRefresher, "interval", self.refresh_seconds))
        super().setUp()
        self.commands.storage = self.gateway.storage

    def _counted(self, name: str, method: Any) -> Any:
        commands = self.commands

        async def counted(storage: Storage, *args: Any, **kwargs: Any) -> Any:
            commands.calls.append((name, time.monotonic(), storage))
            if name == "count_events" and commands.failure is not None:
                raise commands.failure
            return await method(storage, *args, **kwargs)

        return counted

    def pause(self, seconds: float) -> None:
        self.io_loop.run_sync(lambda: asyncio.sleep(seconds))

    def wait_for_refresh(self, timeout: float = 5.0) -> None:
        before = len(self.commands.times("count_events"))
        deadline = time.monotonic() + timeout
        while len(self.commands.times("count_events")) == before:
            assert time.monotonic() < deadline, "the outbox gauges were not refreshed"
            self.pause(0.02)
        self.pause(0.01)  # the refresh's own await returns, then the gauges are set

    def scrape(self) -> dict[str, float]:
        """The outbox samples of one scrape: ``pending``, ``dead``… and ``age``, ``refreshed``."""
        response = self.fetch("/metrics")
        assert response.code == 200, response.body
        found: dict[str, float] = {}
        for family in text_string_to_metric_families(response.body.decode()):
            for sample in family.samples:
                if sample.name == "wxgate_outbox_events":
                    found[sample.labels["status"]] = sample.value
                elif sample.name == "wxgate_outbox_events_age_seconds":
                    found["age"] = sample.value
                elif sample.name == "wxgate_outbox_events_refreshed_timestamp_seconds":
                    found["refreshed"] = sample.value
        return found

    def enqueue(self, count: int) -> None:
        async def enqueue_all() -> None:
            for _ in range(count):
                event_id = uuid.uuid4().hex
                event = OutboxEvent(
                    id=event_id,
                    type="user.login",
                    appid="wx0000000000demo0",
                    endpoint="crm",
                    payload={"id": event_id},
                    created_at=time.time(),
                )
                assert await self.gateway.storage.enqueue_event(event)

        self.io_loop.run_sync(enqueue_all)


class ScrapeTest(GaugeTestCase):
    """The default interval (15 s): no refresh comes during the test after the first."""

    def test_scrapes_send_no_storage_command(self) -> None:
        self.pause(0.2)
        mark = len(self.commands.sent)
        for _ in range(40):
            self.scrape()

        async def burst() -> list[int]:
            answers = await asyncio.gather(
                *(self.http_client.fetch(self.get_url("/metrics"), raise_error=False) for _ in range(8))
            )
            return [answer.code for answer in answers]

        assert self.io_loop.run_sync(burst) == [200] * 8
        assert self.commands.since(mark) == []

    def test_a_scrape_shows_the_last_values_until_the_next_refresh(self) -> None:
        self.pause(0.2)
        first = self.scrape()
        assert first["pending"] == 0.0
        assert abs(first["refreshed"] - time.time()) < 5
        self.enqueue(3)
        self.pause(0.3)
        later = self.scrape()
        assert later["pending"] == 0.0  # read before the events came; the next refresh shows them
        assert later["refreshed"] == first["refreshed"]
        assert later["age"] >= first["age"] + 0.25


class RefreshTest(GaugeTestCase):
    refresh_seconds = 0.2

    def test_count_events_is_called_at_most_once_per_interval(self) -> None:
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            self.scrape()  # scrapes in between add no read
            self.pause(0.03)
        reads = self.commands.times("count_events")
        assert len(reads) >= 3, "the refresher does not run"
        gaps = [b - a for a, b in itertools.pairwise(reads)]
        assert min(gaps) >= self.refresh_seconds - 0.01, gaps
        assert {name for name, _ in self.commands.sent} == {"count_events"}

    def test_gauges_show_the_counts_after_a_refresh(self) -> None:
        self.enqueue(3)
        storage = self.gateway.storage

        async def dead_letter_one() -> None:
            (claimed,) = await storage.claim_events("test", 1, 30, time.time())
            await storage.dead_letter_event(claimed.id, "test", "refused")

        self.io_loop.run_sync(dead_letter_one)
        self.wait_for_refresh()
        shown = self.scrape()
        assert (shown["pending"], shown["dead"], shown["delivering"], shown["delivered"]) == (2.0, 1.0, 0.0, 0.0)
        # the values were read just now (bounds a loaded CI machine keeps: an age in
        # milliseconds or since 1970 is far outside them)
        assert 0 <= shown["age"] < 5.0
        assert abs(shown["refreshed"] - time.time()) < 5.0

    def test_a_failing_storage_is_logged_and_scrapes_still_answer(self) -> None:
        self.wait_for_refresh()
        self.enqueue(2)
        self.wait_for_refresh()
        assert self.scrape()["pending"] == 2.0
        with capture_logs() as logs:
            self.commands.failure = StorageUnavailable(log_detail="test outage")
            self.wait_for_refresh()
            self.wait_for_refresh()
            down = self.scrape()
            self.commands.failure = RuntimeError("a storage plugin's bug")
            self.wait_for_refresh()
            crashed = self.scrape()
        assert down["pending"] == 2.0  # the last values stay, and their age shows it
        assert down["age"] >= 2 * self.refresh_seconds - 0.05
        assert crashed["pending"] == 2.0
        assert crashed["age"] > down["age"]
        failed = [e for e in logs if e["event"] == "outbox_gauges_refresh_failed"]
        assert failed
        assert {(e["error"], e["log_level"]) for e in failed} == {("storage_unavailable", "warning")}
        crashes = [e for e in logs if e["event"] == "outbox_gauges_refresh_crashed"]
        assert crashes
        assert {e["log_level"] for e in crashes} == {"error"}
        self.commands.failure = None  # the task survived both and reads again
        self.wait_for_refresh()
        assert self.scrape()["age"] < crashed["age"]  # fresh again (a stale age only grows)


class IdleBudgetTest(GaugeTestCase):
    """Idle, the refresh takes the place of one outbox poll: the process sends no more
    storage commands with the gauges than the delivery loop alone would."""

    config_text = WEBHOOK_CONFIG
    refresh_seconds = 0.35

    def test_an_idle_process_sends_one_storage_command_per_poll_interval(self) -> None:
        self.pause(0.3)
        mark = len(self.commands.sent)
        window = 2.0
        self.pause(window)
        sent = self.commands.since(mark)
        assert sent.count("count_events") >= 2, "the gauges were not refreshed"
        assert set(sent) == {"claim_events", "count_events"}
        # the loop's own polls alone: at most one per 0.1 s, plus one at the window's edge
        assert len(sent) <= round(window / 0.1) + 1, sent
