"""Runs the nx-27017 MongoDB wire-protocol server (SQLite-backed) as a child process.

For ``uri: embedded``: zero set-up persistence on one machine, and the server the
test suite and benchmarks use. Production deployments point ``uri`` at real MongoDB.

The server has no authentication: any local process can reach its loopback port. Its
data directory is kept private (0700, files 0600) so that other users of the machine at
least cannot read or copy the SQLite file; the records' MACs and seals (see the mongo
storage) are what stands against writes through the port.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


class EmbeddedMongoError(RuntimeError):
    pass


def private_dir(path: Path) -> None:
    """Create ``path`` (and its parents) if needed, and make it and the files directly in it
    private to this user: 0700 and 0600. Tightened at every start, so that a directory made
    by an older wxgate, under a looser umask, is private too."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    for entry in path.iterdir():
        if entry.is_file() and not entry.is_symlink():
            os.chmod(entry, 0o600)


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # the mode of os.open applies only to a file it creates
    with os.fdopen(fd, "w") as out:
        out.write(text)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def running_embedded_uri(data_dir: Path) -> str | None:
    """The URI of the embedded server another process runs for ``data_dir``, if it is up."""
    try:
        info = json.loads((data_dir / "server.json").read_text())
        os.kill(int(info["pid"]), 0)
        with socket.create_connection(("127.0.0.1", int(info["port"])), timeout=0.5):
            return f"mongodb://127.0.0.1:{int(info['port'])}/"
    except (OSError, ValueError, KeyError, TypeError):
        return None


class EmbeddedMongo:
    """``db`` is a SQLite file path or ``memory``. The server runs with warnings-only
    logs (see nx_quiet); its log and pid file live in a private temporary directory
    that ``stop`` removes (the server deletes its pid file on exit, so it must never
    be a shared path)."""

    def __init__(
        self, db: str, port: int | None = None, log_file: str | None = None, marker: Path | None = None
    ) -> None:
        self.db = db
        self.marker = marker
        self.port = port or free_port()
        self.workdir = tempfile.mkdtemp(prefix="wxgate-nx-")
        self.log_file = log_file or os.path.join(self.workdir, "nx.log")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/"

    def start(self, timeout: float = 20.0) -> str:
        if importlib.util.find_spec("nx_27017") is None:
            raise EmbeddedMongoError(
                "uri: embedded needs the nx-27017 package: pip install 'wxgate[embedded]' "
                "(or set uri to a MongoDB deployment, e.g. WXGATE_MONGO_URI=mongodb://host:27017)"
            )
        if self.db != "memory":
            private_dir(Path(self.db).parent)
        os.makedirs(self.workdir, mode=0o700, exist_ok=True)  # stop() removed it
        pid_file = Path(self.workdir) / "nx.pid"
        command = [
            sys.executable, "-m", "wxgate_plugins.storages.nx_quiet",
            "--db", self.db, "--host", "127.0.0.1", "-p", str(self.port),
            "--log-file", self.log_file, "--pid-file", str(pid_file),
        ]  # fmt: skip
        # our own interpreter and module, with arguments we built
        self.process = subprocess.Popen(  # noqa: S603
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            umask=0o077,  # SQLite's database, journal and WAL files: 0600
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                raise EmbeddedMongoError(f"the embedded MongoDB server exited: {err.strip()[-500:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    if self.marker is not None:
                        _write_private(self.marker, json.dumps({"port": self.port, "pid": self.process.pid}))
                    return self.uri
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise EmbeddedMongoError(f"the embedded MongoDB server did not listen on port {self.port} in {timeout}s")

    def stop(self) -> None:
        if self.marker is not None:
            self.marker.unlink(missing_ok=True)
        if self.process is None or self.process.poll() is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
        if self.process.stderr:
            self.process.stderr.close()
        shutil.rmtree(self.workdir, ignore_errors=True)
