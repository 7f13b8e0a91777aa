"""Processes of the drill: started inside a host's namespace, stopped by pid, never by name."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

STOP_SECONDS = 10.0


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (a gateway's workers), from /proc, children first listed."""
    found: list[int] = []
    todo = [pid]
    for _ in range(1000):  # bounded: a process tree here has a handful of members
        if not todo:
            break
        current = todo.pop()
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            found.append(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@dataclass
class Procs:
    logs: Path
    running: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, start_new_session=True
        )
        log.close()
        self.running[name] = proc
        return proc

    def kill9(self, name: str) -> list[int]:
        """SIGKILL to the process and every process below it, all at once: a host that dies."""
        proc = self.running.pop(name)
        pids = [proc.pid, *descendants(proc.pid)]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(STOP_SECONDS)
        return pids

    def stop(self, name: str) -> None:
        proc = self.running.pop(name, None)
        if proc is None:
            return
        below = descendants(proc.pid)
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(STOP_SECONDS)
        for pid in below:  # workers whose parent went first
            if alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def stop_all(self) -> None:
        for name in list(self.running):
            self.stop(name)

    def signal(self, name: str, signum: int) -> None:
        os.kill(self.running[name].pid, signum)

    def exited(self) -> list[str]:
        return [f"{name} (exit {proc.returncode})" for name, proc in self.running.items() if proc.poll() is not None]
