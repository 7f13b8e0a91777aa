"""A small pre-fork supervisor: N worker processes share the listening sockets.

Like Tornado's ``fork_processes`` (sockets bound before forking, each child runs its
own IOLoop), plus what an operator needs from a parent: SIGTERM/SIGINT are passed to
every worker and the parent waits for them; SIGHUP is passed on too (each worker
reloads) and the parent re-reads the file as well, so that a worker it starts later
runs what the others run; a worker that dies is replaced, with a growing delay when it
dies soon after its start, and after a few such deaths in a row the parent gives up
with the last worker's error rather than loop.

A worker that fails writes one line in the configured log format, and its error to a
pipe the parent reads once it has exited: the error the parent stops with.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

from gateway.errors import ConfigError, GatewayError
from gateway.logs import get_logger

# A worker that dies this soon after its start most likely fails at start-up (storage
# down, a port taken, a plugin crashing): replacing it at once would only repeat that.
QUICK_DEATH_SECONDS = 10.0
QUICK_DEATHS_TO_GIVE_UP = 5
BACKOFF_INITIAL_SECONDS = 0.5
_MAX_ERROR_BYTES = 4096


class WorkersFailing(Exception):
    """Workers kept dying at start-up: the supervisor stopped. The message is the last
    worker's error."""


@dataclass
class _Child:
    worker_id: int
    started: float
    errors: int  # read end of the pipe the child writes its error to


@dataclass(frozen=True)
class Supervision:
    """How the parent treats dying workers (tests shorten the delays)."""

    quick_death_seconds: float = QUICK_DEATH_SECONDS
    quick_deaths_to_give_up: int = QUICK_DEATHS_TO_GIVE_UP
    backoff_initial: float = BACKOFF_INITIAL_SECONDS


def describe_failure(exc: BaseException) -> str:
    """One line for an operator: what failed and why (never a traceback)."""
    if isinstance(exc, GatewayError):
        text = f"{exc.client_message} ({exc.log_detail or exc.code})"
    elif isinstance(exc, ConfigError):
        text = str(exc)
    else:
        text = f"{type(exc).__name__}: {exc}"
    return " / ".join(line.strip() for line in text.splitlines() if line.strip())


def run_workers(
    count: int,
    work: Callable[[int], None],
    prepare: Callable[[int], None] | None = None,
    forked: Callable[[int], None] | None = None,
    exited: Callable[[int], None] | None = None,
    reread: Callable[[], None] | None = None,
    supervision: Supervision = Supervision(),
) -> int:
    """Fork ``count`` workers running ``work(worker_id)``; returns 0 when all have exited
    after SIGTERM/SIGINT, raises :class:`WorkersFailing` when they keep dying at start.
    ``prepare`` and ``forked`` run in the parent just before and just after each fork
    (e.g. to give each worker a listening socket of its own), ``exited(pid)`` once a
    worker is gone, ``reread()`` at SIGHUP after the workers were told."""
    log = get_logger("wxgate.prefork")
    children: dict[int, _Child] = {}
    stopping = False

    def spawn(worker_id: int) -> None:
        if prepare is not None:
            prepare(worker_id)
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGHUP, signal.SIG_DFL)
            os.close(read_end)
            _child(worker_id, work, write_end)
        os.close(write_end)
        os.set_blocking(read_end, False)
        children[pid] = _Child(worker_id, time.monotonic(), read_end)
        if forked is not None:
            forked(worker_id)

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def hang_up(signum: int, _frame: FrameType | None) -> None:
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
        if reread is not None:
            reread()

    def _stopped() -> bool:  # (read through a call: a signal handler may have set it meanwhile)
        return stopping

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, hang_up)  # reload: every worker re-reads the file
    for worker_id in range(count):
        spawn(worker_id)
    log.info("workers_started", workers=count, pids=sorted(children))
    quick_deaths = 0
    failure: str | None = None
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        child = children.pop(pid, None)
        if child is None:
            continue  # some other child of ours (e.g. an embedded server)
        # a worker killed (SIGKILL, the OOM killer) or exiting without a word wrote nothing: its status says why
        error = _read_error(child.errors) or _cause(status)
        if exited is not None:
            exited(pid)
        if stopping:
            continue
        lived = time.monotonic() - child.started
        quick_deaths = quick_deaths + 1 if lived < supervision.quick_death_seconds else 0
        log.error(
            "worker_died", worker=child.worker_id, pid=pid, status=_status(status), lived_s=round(lived, 3),
            error=error, quick_deaths=quick_deaths,
        )  # fmt: skip
        if quick_deaths >= supervision.quick_deaths_to_give_up:
            failure = error
            log.error("workers_failing", deaths=quick_deaths, error=failure, hint="fix the cause, then start again")
            stop(signal.SIGTERM, None)
            continue
        if quick_deaths:
            _pause(supervision.backoff_initial * 2 ** (quick_deaths - 1), lambda: stopping)
            if _stopped():
                continue
        try:
            spawn(child.worker_id)
        except OSError as exc:  # e.g. its port was taken while no worker listened on it
            log.error("worker_respawn_failed", worker=child.worker_id, error=str(exc))
            failure = f"cannot start worker {child.worker_id}: {exc}"
            stop(signal.SIGTERM, None)
    if failure is not None:
        raise WorkersFailing(failure)
    return 0


def _child(worker_id: int, work: Callable[[int], None], errors: int) -> None:
    """The worker process: never returns."""
    code = 0
    try:
        work(worker_id)
    except BaseException as exc:
        code = 1
        text = describe_failure(exc)
        with contextlib.suppress(Exception):
            get_logger("wxgate.prefork").error("worker_failed", worker=worker_id, pid=os.getpid(), error=text)
        with contextlib.suppress(OSError):
            os.write(errors, text.encode("utf-8", "replace")[:_MAX_ERROR_BYTES])
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _read_error(fd: int) -> str:
    """What the exited child wrote (it is gone: nothing more will come)."""
    chunks = []
    try:
        while chunk := os.read(fd, _MAX_ERROR_BYTES):
            chunks.append(chunk)
    except BlockingIOError:
        pass
    finally:
        os.close(fd)
    return b"".join(chunks).decode("utf-8", "replace")


def _status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited {os.waitstatus_to_exitcode(status)}"


def _cause(status: int) -> str:
    """The ``error`` of a worker that wrote none."""
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        return f"killed by signal {number} ({signal.Signals(number).name})"
    return f"exited with status {os.waitstatus_to_exitcode(status)} without an error message"


def _pause(seconds: float, stopped: Callable[[], bool]) -> None:
    """Sleep, but not past a SIGTERM (the handler sets the flag ``stopped`` reads)."""
    deadline = time.monotonic() + seconds
    while not stopped() and (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, 0.1))
