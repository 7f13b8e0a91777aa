"""The workers' listening sockets (gateway.listeners), with real forks and sockets: a
socket is open only in its worker, so connections never wait behind a worker that is
gone. (Found by review: the parent and siblings kept copies of every worker's socket,
and the kernel went on hashing about 1/N of new connections to a dead worker's queue.)"""

from __future__ import annotations

import contextlib
import os
import socket
import time

from gateway.listeners import Listeners


def _accepting_worker(listeners: Listeners, worker_id: int, seconds: float) -> int:
    """Fork a worker that answers every connection with b"k" for ``seconds``."""
    listeners.prepare(worker_id)
    pid = os.fork()
    if pid == 0:  # the worker
        code = 0
        try:
            [sock] = listeners.of(worker_id)
            sock.settimeout(0.2)
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                try:
                    conn, _ = sock.accept()
                except TimeoutError:
                    continue
                conn.sendall(b"k")
                conn.close()
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    listeners.forked(worker_id)
    return pid


def _dead_worker(listeners: Listeners, worker_id: int) -> int:
    """Fork a worker that exits at once, as a crashed one would."""
    listeners.prepare(worker_id)
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    listeners.forked(worker_id)
    os.waitpid(pid, 0)
    return pid


def test_connections_do_not_wait_behind_a_dead_worker() -> None:
    listeners = Listeners(0, "127.0.0.1", 2)
    alive = _accepting_worker(listeners, 0, seconds=6)
    try:
        _dead_worker(listeners, 1)
        answered = 0
        for _ in range(40):
            with socket.create_connection(("127.0.0.1", listeners.port), timeout=2) as client:
                client.settimeout(2)
                with contextlib.suppress(TimeoutError):  # a connection stranded behind the dead worker
                    answered += client.recv(1) == b"k"
        assert answered == 40
    finally:
        os.kill(alive, 9)
        os.waitpid(alive, 0)
        listeners.close()


def test_each_worker_has_its_own_socket_on_one_port() -> None:
    listeners = Listeners(0, "127.0.0.1", 3)
    try:
        for worker_id in (1, 2):
            listeners.prepare(worker_id)
        sockets = [listeners.of(w)[0] for w in range(3)]
        assert len({s.fileno() for s in sockets}) == 3
        assert {s.getsockname()[1] for s in sockets} == {listeners.port}
        listeners.forked(1)  # the parent's copy goes once the worker has it
        assert sockets[1].fileno() == -1
    finally:
        listeners.close()


def test_one_process_serves_one_plain_socket() -> None:
    listeners = Listeners(0, "127.0.0.1", 1)
    try:
        [sock] = listeners.of(0)
        assert not sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
        listeners.prepare(0)
        listeners.forked(0)
        assert listeners.of(0) == [sock]
        assert sock.fileno() != -1
    finally:
        listeners.close()
