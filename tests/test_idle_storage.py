"""A gateway with nothing to do sends at most one storage command per second in total
(outbox polling, metric gauges, leases), also while a receiver is down and an event
waits for its retry time; an event emitted in the process wakes its deliverer at once.
Counted with PyMongo's command monitoring against the real wire-protocol server."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from gateway.config import parse_config
from gateway.hooks import Hooks
from gateway.runtime import Gateway
from gateway.storage import LoginSession
from tests.helpers import free_port
from tests.test_round_trips import CommandCounter
from tests.test_storage_contract import STORAGE_KEY
from tests.webhook_receiver import Receiver
from wxgate_plugins.storages.mongo import MongoStorage

WINDOW = 4.0  # seconds of idleness counted


def config(mongo_uri: str, database: str, url: str, **webhooks: Any) -> Any:
    policy = "\n  ".join(f"{k}: {v}" for k, v in webhooks.items())
    text = f"""
storage: {{plugin: mongo, options: {{uri: "{mongo_uri}", database: {database}, encryption_key: "{STORAGE_KEY}"}}}}
webhooks:
  endpoints: [{{name: crm, url: "{url}", secret: crm-secret-0123456789}}]
  {policy}
pipelines:
  login: [code2session, issue_session]
apps:
  shop: {{appid: wx00000000000shop, secret: shop-secret-1234, upstream: "http://127.0.0.1:9"}}
"""
    return parse_config(text, "<idle>")


async def started(mongo_uri: str, url: str, **webhooks: Any) -> tuple[Gateway, CommandCounter]:
    database = "idle" + uuid.uuid4().hex[:10]
    gateway = Gateway(config(mongo_uri, database, url, **webhooks), "http://127.0.0.1:9", hooks=Hooks())
    assert isinstance(gateway.storage, MongoStorage)
    counter = CommandCounter(database)
    gateway.storage.event_listeners.append(counter)
    await gateway.start()
    return gateway, counter


async def first_poll_done(counter: CommandCounter) -> None:
    """Until the deliverer's first poll (a claim that found nothing) was sent, however late a
    loaded machine runs it, then a moment for its answer: from here on the deliverer sleeps."""
    deadline = time.monotonic() + 15
    while ("findAndModify", "outbox") not in counter.commands:
        assert time.monotonic() < deadline, "the deliverer never polled"
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)


async def delivered(gateway: Gateway, count: int) -> None:
    """Until ``count`` deliveries were acknowledged in the storage (the ack is awaited before
    the deliverer counts one)."""
    deadline = time.monotonic() + 15
    while gateway.deliverer.counts["delivered"] < count:
        assert time.monotonic() < deadline, "the delivery was not acknowledged"
        await asyncio.sleep(0.01)


async def emit(gateway: Gateway) -> str:
    app = gateway.config.apps["shop"]
    return await gateway.events.emit("user.login", app, {"openid": "o1"}, key=uuid.uuid4().hex)


def test_idle_with_an_event_waiting_for_its_retry(mongo_uri: str) -> None:
    down = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens: the receiver is down

    async def main() -> None:
        gateway, counter = await started(mongo_uri, down, backoff_initial=60)
        try:
            await emit(gateway)
            deadline = time.monotonic() + 10
            while gateway.deliverer.counts["retried"] < 1:  # tried once, refused, waits 30-60 s
                assert time.monotonic() < deadline, "the event was not attempted"
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)  # let the retry's bookkeeping settle
            counter.commands.clear()
            await asyncio.sleep(WINDOW)
            commands = list(counter.commands)
            assert len(commands) <= WINDOW, commands  # at most one a second, the gauges' read included
            assert ("findAndModify", "outbox") in commands  # still polling: other processes' events
            (waiting,) = await gateway.storage.list_events("pending", 10)
            assert waiting.attempts == 1  # not claimed again while it waits
        finally:
            await gateway.close()

    asyncio.run(main())


def test_an_event_emitted_here_is_delivered_at_once(mongo_uri: str) -> None:
    """With a long poll interval, only the wake can explain a prompt delivery."""
    receiver = Receiver().start()

    async def main() -> None:
        gateway, counter = await started(mongo_uri, receiver.url, poll_interval=30)
        try:
            await first_poll_done(counter)  # it found nothing: the deliverer sleeps
            counter.commands.clear()
            await asyncio.sleep(2)
            assert counter.commands == []  # idle for 30 s but for the wake
            for n in range(1, 4):
                sent = time.monotonic()
                await emit(gateway)
                while len(receiver.delivered()) < n:
                    # the next poll is 30 s away: well under that is the wake (a loaded CI
                    # machine may take seconds for the round trips themselves)
                    assert time.monotonic() - sent < 10.0, "not delivered at once"
                    await asyncio.sleep(0.005)
        finally:
            await gateway.close()

    try:
        asyncio.run(main())
    finally:
        receiver.stop()


def test_a_retry_is_claimed_when_due_and_a_delivery_costs_three_commands(mongo_uri: str) -> None:
    """The deliverer sleeps until the retry it scheduled comes due (not a whole poll
    interval), and a delivery is its claim (the due event, then none more), the ack."""
    receiver = Receiver().start()
    receiver.script = [503]  # refused once, then accepted

    async def main() -> None:
        gateway, counter = await started(mongo_uri, receiver.url, poll_interval=30, backoff_initial=0.4)
        try:
            await first_poll_done(counter)
            sent = time.monotonic()
            await emit(gateway)
            while len(receiver.delivered()) < 1:
                # the retry is due 0.4 s after the refusal, the next poll 30 s away
                assert time.monotonic() - sent < 15.0, "the retry waited for the next poll"
                await asyncio.sleep(0.01)
            await delivered(gateway, 1)  # the ack
            counter.commands.clear()
            await emit(gateway)
            await delivered(gateway, 2)
            await asyncio.sleep(0.5)  # time for any command more, were there one
            assert counter.commands == [
                ("insert", "outbox"),
                ("findAndModify", "outbox"),
                ("findAndModify", "outbox"),
                ("update", "outbox"),
            ]
        finally:
            await gateway.close()

    try:
        asyncio.run(main())
    finally:
        receiver.stop()


def test_the_session_sweep_and_the_gauges_take_idle_polls_turns(mongo_uri: str) -> None:
    """Expired sessions are removed in the background, in place of an idle poll: with the sweep
    due every two seconds besides the gauges' read, an idle process still sends at most one
    command a second."""
    down = f"http://127.0.0.1:{free_port()}/hook"

    async def main() -> None:
        gateway, counter = await started(mongo_uri, down)
        try:
            now = time.time()
            await gateway.storage.put_login_session(LoginSession("h-expired", "wx00000000000shop", "o1", None, 1, 2))
            await gateway.storage.put_login_session(
                LoginSession("h-live", "wx00000000000shop", "o1", None, now, now + 3600)
            )
            await gateway.session_sweeper.stop()
            gateway.session_sweeper.interval = 2.0
            gateway.session_sweeper.start()
            await first_poll_done(counter)
            counter.commands.clear()
            await asyncio.sleep(WINDOW)
            commands = list(counter.commands)
            assert len(commands) <= WINDOW, commands
            assert ("delete", "sessions") in commands  # the sweep ran
            assert ("findAndModify", "outbox") in commands  # and the deliverer still polled
            assert await gateway.storage.get_login_session("h-expired") is None
            assert await gateway.storage.get_login_session("h-live") is not None
        finally:
            await gateway.close()

    asyncio.run(main())
