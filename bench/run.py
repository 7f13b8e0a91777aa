#!/usr/bin/env python3
"""wxgate benchmark: one command, every figure from the same run on the same machine.

    python bench/run.py [--duration 10] [--connections 32] [--out bench/out/latest.json]

Starts, each in its own process: a bare Tornado hello-world (the ceiling for any
Tornado service), the standalone sandbox upstream, a MongoDB wire-protocol server
(nx-27017), and one gateway process per storage (memory, mongo). Drives each with wrk
(closed loop, fixed connections, fixed time) and prints req/s, p50/p99 latency, errors,
RSS, and req/s as a fraction of the hello-world ceiling; then times the storage alone
(upserts/s, one at a time and 50 in flight). Needs wrk: `apt-get install wrk`.
Everything listens on 127.0.0.1 and every load run is bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from wxgate_plugins.storages.embedded_mongo import EmbeddedMongo, free_port  # noqa: E402

BIN = Path(sys.executable).parent
STORAGE_KEY = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
USERS = 200

WRK_SCRIPT = r"""
local requests = {}
local n = 0
function init(args)
  for line in io.lines(args[1]) do
    local method, path, token, body = line:match("^(%S+)\t(%S+)\t(%S*)\t(.*)$")
    local headers = {["Content-Type"] = "application/json"}
    if token ~= "-" then headers["Authorization"] = "Bearer " .. token end
    n = n + 1
    requests[n] = wrk.format(method, path, headers, body)
  end
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
end
local i = 0
function request()
  i = i % n + 1
  return requests[i]
end
"""


def config_for(storage: str, mongo_uri: str, sandbox_port: int) -> str:
    storage_block = (
        "storage: {plugin: memory}"
        if storage == "memory"
        else f'storage: {{plugin: mongo, options: {{uri: "{mongo_uri}", database: bench{int(time.time())}, '
        f'encryption_key: "{STORAGE_KEY}"}}}}'
    )
    return f"""
server: {{log_format: json}}
{storage_block}
pipelines:
  login: [code2session, persist_user, issue_session]
  phone: [check_session, {{decrypt: {{kind: phone}}}}, watermark, mask_guard, persist_phone, respond]
apps:
  bench:
    appid: wx0000000000bench
    secret: bench-secret-123
    upstream: http://127.0.0.1:{sandbox_port}
"""


def post(url: str, body: dict[str, Any], token: str | None = None) -> dict[str, Any]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, json.dumps(body).encode(), headers, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        result: dict[str, Any] = json.loads(response.read())
        return result


def wait_up(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Procs:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *command: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


def wrk(url: str, lines: list[str], duration: int, connections: int, workdir: Path) -> dict[str, Any]:
    data = workdir / f"requests-{abs(hash(url)) % 10**8}.tsv"
    data.write_text("\n".join(lines) + "\n")
    script = workdir / "requests.lua"
    script.write_text(WRK_SCRIPT)
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "--timeout", "5s"]
    result = subprocess.run(
        [*command, "-s", str(script), url, "--", str(data)],
        capture_output=True, text=True, timeout=duration + 60, check=True,
    )  # fmt: skip
    return parse_wrk(result.stdout)


def parse_wrk(out: str) -> dict[str, Any]:
    def ms(text: str) -> float:
        value, unit = re.match(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]

    stats: dict[str, Any] = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}  # type: ignore[union-attr]
    for pct in ("50", "99"):
        match = re.search(rf"^\s+{pct}(?:\.000)?%\s+(\S+)", out, re.M)
        stats[f"p{pct}_ms"] = ms(match.group(1)) if match else None
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    stats["requests"] = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    stats["errors"] = (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, errors.groups())) if errors else 0)
    return stats


def prepare_phone_requests(gateway: str, sandbox: str, prefix: str) -> list[str]:
    lines = []
    for i in range(USERS):
        user = f"{prefix}{i}"
        code = post(f"{sandbox}/_sandbox/bench/wx.login", {"user": user})["code"]
        token = post(f"{gateway}/v1/bench/login", {"code": code})["token"]
        device = post(f"{sandbox}/_sandbox/bench/getPhoneNumber", {"user": user})
        body = json.dumps({"encryptedData": device["encryptedData"], "iv": device["iv"]})
        lines.append(f"POST\t/v1/bench/phone\t{token}\t{body}")
    return lines


async def storage_throughput(mongo_uri: str, seconds: float = 3.0) -> dict[str, float]:
    from wxgate_plugins.storages.mongo import MongoOptions, MongoStorage

    storage = MongoStorage(
        MongoOptions(uri=mongo_uri, database=f"upserts{int(time.time())}", encryption_key=STORAGE_KEY)
    )
    await storage.start()
    results: dict[str, float] = {}
    try:
        for in_flight in (1, 50):
            done = 0
            deadline = time.monotonic() + seconds

            async def worker(n: int, deadline: float = deadline) -> None:
                nonlocal done
                i = 0
                while time.monotonic() < deadline:
                    await storage.upsert_user("wxbench", f"w{n}-{i % 500}", None, time.time())
                    done += 1
                    i += 1

            started = time.monotonic()
            await asyncio.gather(*(worker(n) for n in range(in_flight)))
            results[f"upserts_per_s_{in_flight}_in_flight"] = round(done / (time.monotonic() - started), 1)
    finally:
        await storage.close()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds per load run (default 10)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "latest.json"))
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("bench: wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2

    procs = Procs()
    mongo = EmbeddedMongo(db="memory")
    workdir = Path(tempfile.mkdtemp(prefix="wxgate-bench-"))
    rows: dict[str, dict[str, Any]] = {}
    try:
        mongo_uri = mongo.start()
        sandbox_port = free_port()
        (workdir / "sandbox.yaml").write_text(config_for("memory", mongo_uri, sandbox_port))
        procs.start(
            str(BIN / "wxgate"), "sandbox", "--config", str(workdir / "sandbox.yaml"), "--port", str(sandbox_port)
        )
        sandbox = f"http://127.0.0.1:{sandbox_port}"
        wait_up(sandbox + "/_sandbox/_stats")

        hello_port = free_port()
        hello = procs.start(sys.executable, str(ROOT / "bench" / "hello.py"), str(hello_port))
        wait_up(f"http://127.0.0.1:{hello_port}/")
        rows["hello-world POST"] = wrk(
            f"http://127.0.0.1:{hello_port}", ['POST\t/\t-\t{"code": "x"}'], args.duration, args.connections, workdir
        )
        rows["hello-world POST"]["rss_mb"] = round(rss_mb(hello.pid), 1)

        for storage in ("memory", "mongo"):
            port = free_port()
            config = workdir / f"{storage}.yaml"
            config.write_text(config_for(storage, mongo_uri, sandbox_port))
            gateway_proc = procs.start(str(BIN / "wxgate"), "serve", "--config", str(config), "--port", str(port))
            gateway = f"http://127.0.0.1:{port}"
            wait_up(gateway + "/healthz")
            lines = prepare_phone_requests(gateway, sandbox, f"{storage}-")
            name = f"/phone token+encryptedData ({storage})"
            rows[name] = wrk(gateway, lines, args.duration, args.connections, workdir)
            rows[name]["rss_mb"] = round(rss_mb(gateway_proc.pid), 1)

        storage_figures = asyncio.run(storage_throughput(mongo_uri))
    finally:
        procs.stop()
        mongo.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    ceiling = rows["hello-world POST"]["rps"]
    print(f"\n{'run':<44} {'req/s':>9} {'vs ceiling':>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'RSS MB':>7}")
    for name, row in rows.items():
        row["vs_ceiling"] = round(row["rps"] / ceiling, 3)
        print(
            f"{name:<44} {row['rps']:>9.0f} {row['vs_ceiling']:>10.2f} {row['p50_ms']:>8.2f} "
            f"{row['p99_ms']:>8.2f} {row['errors']:>7} {row['rss_mb']:>7.1f}"
        )
    for name, value in storage_figures.items():
        print(f"{name:<44} {value:>9.0f}")
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    report = {
        "commit": commit,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "duration_s": args.duration,
        "connections": args.connections,
        "runs": rows,
        "storage": storage_figures,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
