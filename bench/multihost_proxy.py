"""A TCP proxy on the storage host's path: slow and lossy on demand (this kernel has no netem).

    python -m bench.multihost_proxy --listen 0.0.0.0:27018 --target 127.0.0.1:27017 --stats FILE

SIGUSR1 turns the slow network on: every chunk waits ``--delay`` seconds in each direction
(latency, not a bandwidth limit: chunks keep their order and overlap), and ``--reset`` of
the connections (1 %, at least one of those open when it turns on) are reset (RST) at a
random moment within ``--reset-window`` seconds. SIGUSR2 turns it off. SIGTERM stops it.
Counts (connections, resets, mode) are written to ``--stats`` as JSON at every change.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import signal
import socket
import struct
import time
from pathlib import Path

CHUNK = 65536


class Proxy:
    def __init__(self, target: tuple[str, int], delay: float, reset: float, window: float, stats: Path) -> None:
        self.target = target
        self.delay = delay
        self.reset_share = reset
        self.window = window
        self.stats_path = stats
        self.slow = False
        self.accepted = 0
        self.resets = 0
        self.open: dict[int, asyncio.StreamWriter] = {}
        self.rng = random.Random(17)  # the same connections reset on every run

    def write_stats(self) -> None:
        stats = {"slow": self.slow, "accepted": self.accepted, "resets": self.resets, "open": len(self.open)}
        tmp = self.stats_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(stats))
        tmp.replace(self.stats_path)

    def set_slow(self, on: bool) -> None:
        self.slow = on
        if on and self.open:
            doomed = self.rng.sample(sorted(self.open), max(1, math.ceil(len(self.open) * self.reset_share)))
            for number in doomed:
                self._schedule_reset(number)
        self.write_stats()

    def _schedule_reset(self, number: int) -> None:
        asyncio.get_running_loop().call_later(self.rng.uniform(0.1, self.window), self._reset, number)

    def _reset(self, number: int) -> None:
        writer = self.open.get(number)
        if writer is None or not self.slow:
            return
        sock = writer.get_extra_info("socket")
        if sock is not None:
            # SO_LINGER 0: close() sends RST, as a middlebox dropping the connection would
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
        self.resets += 1
        self.write_stats()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        number = self.accepted
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(*self.target), 5)
        except (OSError, TimeoutError):
            writer.transport.abort()
            return
        self.open[number] = writer
        if self.slow and number % round(1 / self.reset_share) == 0:
            self._schedule_reset(number)
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self.open.pop(number, None)
            for w in (writer, up_writer):
                w.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def send() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    return
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()

        sender = asyncio.create_task(send())
        try:
            while True:
                data = await reader.read(CHUNK)
                queue.put_nowait((time.monotonic() + (self.delay if self.slow else 0.0), data))
                if not data:
                    break
            await sender
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            sender.cancel()
            writer.transport.abort()  # one side gone: so is the other


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--listen", required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--delay", type=float, default=0.020)
    parser.add_argument("--reset", type=float, default=0.01)
    parser.add_argument("--reset-window", type=float, default=5.0)
    parser.add_argument("--stats", required=True)
    args = parser.parse_args()
    listen_host, listen_port = args.listen.rsplit(":", 1)
    target_host, target_port = args.target.rsplit(":", 1)
    proxy = Proxy((target_host, int(target_port)), args.delay, args.reset, args.reset_window, Path(args.stats))
    server = await asyncio.start_server(proxy.handle, listen_host, int(listen_port), reuse_address=True)
    proxy.write_stats()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGUSR1, proxy.set_slow, True)
    loop.add_signal_handler(signal.SIGUSR2, proxy.set_slow, False)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    proxy.write_stats()


if __name__ == "__main__":
    asyncio.run(main())
