"""Helpers shared by the test modules: the real commands (paths, a free port, starting a
server on one and waiting for it, one JSON request) and the gateway's own log rendering into
a buffer."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from gateway.logs import configure_logging
from gateway.pytest_plugin import SUITE_LOG, log_to_suite

if TYPE_CHECKING:
    from wxgate_plugins.storages.embedded_mongo import EmbeddedMongo

ROOT = Path(__file__).resolve().parent.parent
WXGATE = str(Path(sys.executable).parent / "wxgate")


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [WXGATE, *args], capture_output=True, text=True, timeout=60, cwd=ROOT, env={**os.environ, **(env or {})}
    )


def free_port() -> int:
    """A port free now, and only now: a server to start on it is started with
    :func:`start_on_a_free_port`, which starts it again elsewhere when the port was taken."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# How a server says that its port was taken: the gateway's and the sandbox's "cannot listen on
# 127.0.0.1:P: Address already in use", nginx's "bind() ... (98: Address already in use)", the
# embedded MongoDB's "... address already in use".
PORT_TAKEN = "address already in use"


class Started(NamedTuple):
    proc: subprocess.Popen[str]
    port: int
    url: str  # http://127.0.0.1:<port>


def start_on_a_free_port(
    start: Callable[[int], subprocess.Popen[str]],
    probe: str = "/healthz",
    *,
    port: int | None = None,
    output: Callable[[subprocess.Popen[str]], str] | None = None,
    timeout: float = 20,
    attempts: int = 5,
) -> Started:
    """``start(port)`` starts a server that binds ``port`` on 127.0.0.1 (its ``--port``, or a file
    it writes), and ``probe`` answers once it serves: the process, its port and URL, once it does.

    A port from :func:`free_port` is only free when chosen: until the server binds it, another
    process, or an outgoing connection's ephemeral port, can take it, and the server exits saying so
    (:data:`PORT_TAKEN`). Then it is started again on another port, ``start`` writing anew whatever
    names the port. Any other exit fails the test with what the process wrote: its pipes, and
    ``output(proc)`` for a process that writes to a file. ``port``: the one to try first (a restart
    on the port a server had before).
    """
    written = ""
    for attempt in range(attempts):
        chosen = port if attempt == 0 and port is not None else free_port()
        proc = start(chosen)
        url = f"http://127.0.0.1:{chosen}"
        try:
            exited = _until_up(url + probe, proc, timeout)
        except AssertionError:  # it did not come up: not left running
            proc.terminate()  # a supervisor stops its workers
            try:
                proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
            raise
        if exited is None:
            return Started(proc, chosen, url)
        written = exited + (output(proc) if output is not None else "")
        if PORT_TAKEN not in written.lower():
            raise AssertionError(f"process exited with {proc.returncode}: {written}")
    raise AssertionError(f"the port was taken at each of {attempts} starts; the last said: {written}")


def post(url: str, body: dict[str, Any], token: str | None = None) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, json.dumps(body).encode(), headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def wait_until_up(url: str, proc: subprocess.Popen[str]) -> None:
    """For a server already listening (a second port of one started by :func:`start_on_a_free_port`)."""
    exited = _until_up(url, proc, 20)
    if exited is not None:
        raise AssertionError(f"process exited with {proc.returncode}: {exited}")


def _until_up(url: str, proc: subprocess.Popen[str], timeout: float) -> str | None:
    """None once ``url`` answers; what the process wrote to its pipes if it exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return "".join(text for text in proc.communicate(timeout=30) if text)
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return None
        except urllib.error.HTTPError:
            return None
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not come up")


def start_embedded_mongo(db: str, attempts: int = 5) -> EmbeddedMongo:
    """A started EmbeddedMongo (on a port it chose with a free_port of its own), on another port
    when that one was taken before the server bound it."""
    from wxgate_plugins.storages.embedded_mongo import EmbeddedMongo, EmbeddedMongoError

    said = ""
    for _ in range(attempts):
        mongo = EmbeddedMongo(db=db)
        try:
            mongo.start()
            return mongo
        except EmbeddedMongoError as exc:
            mongo.stop()  # its temporary directory
            said = str(exc)
            if PORT_TAKEN not in said.lower():
                raise
    raise AssertionError(f"the port was taken at each of {attempts} starts; the last said: {said}")


@contextmanager
def rendered_log() -> Iterator[io.StringIO]:
    """The gateway's real logging (``configure_logging("json")``, redaction as the last
    processor before the renderer) into a buffer of the caller's, then the session's again.

    For tests that check what a log line shows; tests of what was logged use
    ``structlog.testing.capture_logs``. The lines are also appended to the session's log,
    so the end-of-run leak check (gateway.pytest_plugin) reads them too.
    """
    buffer = io.StringIO()
    configure_logging("json", stream=buffer)
    try:
        yield buffer
    finally:
        log_to_suite()
        SUITE_LOG.write(buffer.getvalue())
