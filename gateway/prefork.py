"""A small pre-fork supervisor: N worker processes share the listening sockets.

Like Tornado's ``fork_processes`` (sockets bound before forking, each child runs its
own IOLoop), plus what an operator needs from a parent: SIGTERM/SIGINT are passed to
every worker and the parent waits for them, and a worker that dies unexpectedly is
replaced (up to ``max_restarts`` times).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import traceback
from collections.abc import Callable
from types import FrameType

from gateway.logs import get_logger

MAX_RESTARTS = 100


def run_workers(
    count: int,
    work: Callable[[int], None],
    max_restarts: int = MAX_RESTARTS,
    prepare: Callable[[int], None] | None = None,
    forked: Callable[[int], None] | None = None,
) -> int:
    """Fork ``count`` workers running ``work(worker_id)``; returns when all have exited.
    ``prepare`` and ``forked`` run in the parent just before and just after each fork
    (e.g. to give each worker a listening socket of its own)."""
    log = get_logger("wxgate.prefork")
    children: dict[int, int] = {}
    stopping = False

    def spawn(worker_id: int) -> None:
        if prepare is not None:
            prepare(worker_id)
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGHUP, signal.SIG_DFL)
            code = 0
            try:
                work(worker_id)
            except BaseException:
                traceback.print_exc(file=sys.stderr)
                code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        children[pid] = worker_id
        if forked is not None:
            forked(worker_id)

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def forward(signum: int, _frame: FrameType | None) -> None:
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, forward)  # reload: every worker re-reads the file
    for worker_id in range(count):
        spawn(worker_id)
    log.info("workers_started", workers=count, pids=sorted(children))
    restarts = 0
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        worker_id_or_none = children.pop(pid, None)
        if worker_id_or_none is None:
            continue  # some other child of ours (e.g. an embedded server)
        if stopping:
            continue
        restarts += 1
        log.error("worker_died", worker=worker_id_or_none, pid=pid, status=status, restarts=restarts)
        if restarts > max_restarts:
            stop(signal.SIGTERM, None)
            return 1
        try:
            spawn(worker_id_or_none)
        except OSError as exc:  # e.g. its port was taken while no worker listened on it
            log.error("worker_respawn_failed", worker=worker_id_or_none, error=str(exc))
            stop(signal.SIGTERM, None)
            return 1
    return 0
