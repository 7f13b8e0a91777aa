"""Helpers shared by the test modules: the real commands (paths, a free port, waiting for
a server, one JSON request) and the gateway's own log rendering into a buffer."""

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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gateway.logs import configure_logging
from gateway.pytest_plugin import SUITE_LOG, log_to_suite

ROOT = Path(__file__).resolve().parent.parent
WXGATE = str(Path(sys.executable).parent / "wxgate")


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [WXGATE, *args], capture_output=True, text=True, timeout=60, cwd=ROOT, env={**os.environ, **(env or {})}
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


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
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"process exited: {proc.communicate()}")
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not come up")


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
