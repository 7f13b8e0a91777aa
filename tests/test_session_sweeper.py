"""The background sweep of expired sessions: what it logs, and that a failing storage
neither stops it nor reaches anything but the log."""

from __future__ import annotations

import asyncio

from structlog.testing import capture_logs

from gateway.errors import StorageUnavailable
from gateway.session_sweeper import SessionSweeper
from wxgate_plugins.storages.memory import MemoryOptions, MemoryStorage


class Sweeping(MemoryStorage):
    def __init__(self, answers: list[int | Exception]) -> None:
        super().__init__(MemoryOptions())
        self.answers = answers
        self.calls = 0

    async def sweep_expired_sessions(self, now: float) -> int:
        self.calls += 1
        answer = self.answers.pop(0) if self.answers else 0
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_a_sweep_logs_what_it_removed_and_survives_failures() -> None:
    storage = Sweeping([3, StorageUnavailable(log_detail="mongo sweep: timeout"), RuntimeError("a plugin's bug"), 0])
    turns: list[float] = []

    async def turn(limit: float) -> None:
        turns.append(limit)

    async def main() -> None:
        sweeper = SessionSweeper(storage, turn=turn, interval=0.05)
        with capture_logs() as logs:
            sweeper.start()
            for _ in range(200):
                if storage.calls >= 4:
                    break
                await asyncio.sleep(0.02)
            await sweeper.stop()
        assert storage.calls >= 4  # still sweeping after both failures
        assert len(turns) >= 4  # each sweep waited for an idle poll's turn first
        events = [(e["event"], e.get("removed"), e.get("error")) for e in logs]
        assert events[:3] == [
            ("sessions_swept", 3, None),
            ("sessions_sweep_failed", None, "storage_unavailable"),
            ("sessions_sweep_crashed", None, None),
        ]
        assert ("sessions_swept", 0, None) not in events  # nothing removed: nothing logged

    asyncio.run(main())


def test_the_default_storage_sweep_does_nothing() -> None:
    async def main() -> int:
        return await MemoryStorage(MemoryOptions()).sweep_expired_sessions(0.0)

    assert asyncio.run(main()) == 0
