"""The listening sockets of the gateway's workers.

Workers sharing one socket do not share its connections: the first to wake accepts every
connection waiting (Tornado accepts up to 128 per wake-up), and a load of long-lived
keep-alive connections then lands on one worker. With ``SO_REUSEPORT`` each worker has
a socket of its own on the same port and the kernel spreads new connections across the
sockets. A socket is open only in its worker: the kernel keeps hashing connections to a
socket while any copy of it is open, so a copy left in the parent or a sibling would
strand connections behind a worker that died. The parent binds a worker's socket just
before forking it (again for a replacement) and closes its own copy just after.
"""

from __future__ import annotations

import errno
import os
import socket

import tornado.netutil


def reachable_hosts(host: str) -> list[str]:
    """Addresses where this machine reaches a server listening on ``host``."""
    if host in ("", "::"):
        return ["127.0.0.1", "::1"]
    if host == "0.0.0.0":  # noqa: S104 (a comparison)
        return ["127.0.0.1"]
    return [host]


class Listeners:
    def __init__(self, port: int, host: str, processes: int) -> None:
        self.host = host
        self.per_worker = processes > 1 and hasattr(socket, "SO_REUSEPORT")
        if self.per_worker and port and _someone_listens(host, port):
            # SO_REUSEPORT would let us join another server of the same user on this port
            raise OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE))
        first = tornado.netutil.bind_sockets(port, host, reuse_port=self.per_worker)
        self.port: int = first[0].getsockname()[1]
        self.shared: list[socket.socket] | None = None if self.per_worker else first
        self.own: dict[int, list[socket.socket]] = {0: first} if self.per_worker else {}

    def prepare(self, worker_id: int) -> None:
        """In the parent, before forking ``worker_id``: bind its socket if it has none."""
        if self.per_worker and worker_id not in self.own:
            self.own[worker_id] = tornado.netutil.bind_sockets(self.port, self.host, reuse_port=True)

    def forked(self, worker_id: int) -> None:
        """In the parent, after forking ``worker_id``: the worker keeps the only copy."""
        if self.per_worker:
            for sock in self.own.pop(worker_id, []):
                sock.close()

    def of(self, worker_id: int) -> list[socket.socket]:
        """In the worker: the sockets it serves."""
        return self.shared if self.shared is not None else self.own[worker_id]

    def close(self) -> None:
        for sockets in [self.shared or [], *self.own.values()]:
            for sock in sockets:
                sock.close()
        self.own.clear()


def _someone_listens(host: str, port: int) -> bool:
    # checked before binding: a server that starts in between is not seen
    for address in reachable_hosts(host):
        try:
            socket.create_connection((address, port), timeout=1).close()
        except OSError:
            continue
        return True
    return False
