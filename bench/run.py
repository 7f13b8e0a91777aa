#!/usr/bin/env python3
"""wxgate benchmark: one command, every figure from the same run on the same machine.

    python bench/run.py [--duration 10] [--connections 32] [--repeat 3] [--soak-requests 100000]
                        [--only memory,soak,mongo,baseline,workers,micro]

Starts, each in its own process and on 127.0.0.1 only: a bare Tornado hello-world
(the ceiling for any Tornado service), the standalone sandbox upstream (codes made
reusable so a load tool can replay a request), a MongoDB wire-protocol server
(nx-27017), and gateway processes on `memory` and on `mongo` storage. Drives each with
wrk (closed loop, fixed connections, fixed time; `apt-get install wrk`) and prints
req/s, p50/p99 latency, errors, the CPU each process used, RSS, and req/s as a fraction
of the hello-world ceiling. Also: a paced run at half the measured maximum (p99 under
moderate load), RSS before and after ``--soak-requests`` requests, one worker against
two (``--processes 2``), the hand-written baseline handler of ``/phone``
(bench/baseline_phone.py) against the same MongoDB server as wxgate's ``/phone`` on mongo
(``baseline``, with ``mongo``), and in-process timings of the decrypt step against a plain
pycryptodome decrypt and of the pipeline engine with no steps. The ceiling, the empty
pipeline and ``/phone`` run ``--repeat`` times and their median counts (the machine is
shared; one run can be off by 10 %). The CPU column includes wrk's own share. Writes
everything as JSON (``--out``) so runs can be compared between commits. Every run is
bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import timeit
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from wxgate_plugins.storages.embedded_mongo import EmbeddedMongo, free_port  # noqa: E402

BIN = Path(sys.executable).parent
STORAGE_KEY = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
USERS = 200
BENCH_APPID = "wx0000000000bench"
TICKS = os.sysconf("SC_CLK_TCK")
SECTIONS = ("memory", "soak", "mongo", "baseline", "workers", "micro")

WRK_SCRIPT = r"""
local requests = {}
local n = 0
local pause = 0
function init(args)
  for line in io.lines(args[1]) do
    local method, path, token, body = line:match("^(%S+)\t(%S+)\t(%S*)\t(.*)$")
    local headers = {["Content-Type"] = "application/json"}
    if token ~= "-" then headers["Authorization"] = "Bearer " .. token end
    if method == "GET" then body = nil end
    n = n + 1
    requests[n] = wrk.format(method, path, headers, body)
  end
  pause = tonumber(args[2] or "0")
end
local i = 0
function request()
  i = i % n + 1
  return requests[i]
end
function delay()
  return pause
end
"""

FLOWS = """
pipelines:
  login: [code2session, persist_user, issue_session]
  phone: [check_session, {decrypt: {kind: phone}}, watermark, mask_guard, persist_phone, respond]
  phone_oneshot: [code2session, persist_user, {decrypt: {kind: phone}}, watermark, mask_guard, persist_phone, respond]
"""
NOOP_FLOWS = """
pipelines:
  login: []
"""


def config_text(storage: str, mongo_uri: str, sandbox_port: int, flows: str) -> str:
    if storage == "memory":
        storage_block = "storage: {plugin: memory}"
    else:
        database = f"bench{int(time.time() * 1000) % 10**9}"
        Bench.mongo_database = database  # the baseline's sessions are seeded from it
        storage_block = (
            f'storage: {{plugin: mongo, options: {{uri: "{mongo_uri}", database: {database}, '
            f'encryption_key: "{STORAGE_KEY}"}}}}'
        )
    return f"""
server: {{log_format: json}}
{storage_block}
{flows}
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


def wait_up(url: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
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
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children that it waited for."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / TICKS


def tree(pid: int) -> list[int]:
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [pid, *(int(c) for c in children)]


class Procs:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *command: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc

    def stop(self, only: subprocess.Popen[bytes] | None = None) -> None:
        for proc in [only] if only else self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in [only] if only else self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


class Bench:
    mongo_database = ""  # the last mongo gateway's database (config_text names it)

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.procs = Procs()
        self.watched: dict[str, list[int]] = {}
        self.rows: dict[str, dict[str, Any]] = {}
        (workdir / "requests.lua").write_text(WRK_SCRIPT)

    def wrk(
        self, name: str, url: str, lines: list[str], duration: float | None = None, connections: int | None = None,
        pause_ms: float = 0.0, repeat: int = 1,
    ) -> dict[str, Any]:  # fmt: skip
        data = self.workdir / f"{re.sub(r'[^a-z0-9]+', '-', name.lower())}.tsv"
        data.write_text("\n".join(lines) + "\n")
        duration = duration or self.args.duration
        connections = connections or self.args.connections
        runs = []
        for _ in range(repeat):
            before = {label: sum(cpu_seconds(p) for p in pids) for label, pids in self.watched.items()}
            wrk_before = resource.getrusage(resource.RUSAGE_CHILDREN)
            command = ["wrk", "-t1", f"-c{connections}", f"-d{int(duration)}s", "--latency", "--timeout", "5s"]
            started = time.monotonic()
            out = subprocess.run(
                [*command, "-s", str(self.workdir / "requests.lua"), url, "--", str(data), str(pause_ms)],
                capture_output=True, text=True, timeout=duration + 60, check=True,
            ).stdout  # fmt: skip
            wall = time.monotonic() - started
            wrk_after = resource.getrusage(resource.RUSAGE_CHILDREN)
            row = parse_wrk(out)
            row["cpu_percent"] = {
                label: round(100 * (sum(cpu_seconds(p) for p in pids) - before[label]) / wall)
                for label, pids in self.watched.items()
            }
            # the load generator's own share of the two cores
            wrk_cpu = (wrk_after.ru_utime + wrk_after.ru_stime) - (wrk_before.ru_utime + wrk_before.ru_stime)
            row["cpu_percent"]["wrk"] = round(100 * wrk_cpu / wall)
            runs.append(row)
        # the median run by req/s: one noisy run (the machine is shared) does not decide a figure
        row = sorted(runs, key=lambda r: r["rps"])[len(runs) // 2]
        if repeat > 1:
            row["rps_runs"] = [r["rps"] for r in runs]
        self.rows[name] = row
        spread = f" (runs: {', '.join(f'{r:.0f}' for r in row['rps_runs'])})" if repeat > 1 else ""
        print(f"  {name}: {row['rps']:.0f} req/s{spread}, p99 {row['p99_ms']} ms, errors {row['errors']}", flush=True)
        return row

    def gateway(self, label: str, text: str, *extra: str) -> tuple[str, subprocess.Popen[bytes]]:
        port = free_port()
        config = self.workdir / f"{label}.yaml"
        config.write_text(text)
        proc = self.procs.start(str(BIN / "wxgate"), "serve", "--config", str(config), "--port", str(port), *extra)
        url = f"http://127.0.0.1:{port}"
        wait_up(url + "/healthz", proc)
        self.watched[label] = tree(proc.pid)
        return url, proc

    def baseline(self, mongo_uri: str, gateway_url: str, phone: list[str]) -> str:
        """Start bench/baseline_phone.py on the gateway's MongoDB server, its sessions seeded
        with the same tokens and session keys as the gateway's (read through the storage)."""
        database = f"baseline{int(time.time() * 1000) % 10**9}"
        tokens = [line.split("\t")[2] for line in phone]
        asyncio.run(seed_baseline(mongo_uri, self.mongo_database, database, tokens))
        port = free_port()
        proc = self.procs.start(
            sys.executable, str(ROOT / "bench" / "baseline_phone.py"), str(port), mongo_uri, database, BENCH_APPID
        )
        url = f"http://127.0.0.1:{port}"
        wait_up(url + "/v1/bench/phone", proc)
        self.watched["baseline"] = [proc.pid]
        self._baseline = proc
        return url

    def stop_baseline(self) -> None:
        self.procs.stop(self._baseline)
        del self.watched["baseline"]


async def seed_baseline(mongo_uri: str, source: str, database: str, tokens: list[str]) -> None:
    import hashlib

    from pymongo import AsyncMongoClient

    from wxgate_plugins.storages.mongo import MongoOptions, MongoStorage

    storage = MongoStorage(MongoOptions(uri=mongo_uri, database=source, encryption_key=STORAGE_KEY))
    await storage.start()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_uri)
    try:
        for token in tokens:
            digest = hashlib.sha256(token.encode()).hexdigest()
            session = await storage.get_login_session(digest)
            assert session is not None
            keys = await storage.get_session_keys(session.appid, session.openid)
            assert keys is not None
            await client[database].baseline_sessions.insert_one(
                {"_id": digest, "openid": session.openid, "session_key": keys.session_key}
            )
    finally:
        await client.close()
        await storage.close()


def parse_wrk(out: str) -> dict[str, Any]:
    def ms(text: str) -> float:
        value, unit = re.match(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
        return round(float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit], 2)

    stats: dict[str, Any] = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}  # type: ignore[union-attr]
    for pct in ("50", "99"):
        match = re.search(rf"^\s+{pct}(?:\.000)?%\s+(\S+)", out, re.M)
        stats[f"p{pct}_ms"] = ms(match.group(1)) if match else None
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    stats["requests"] = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    stats["errors"] = (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, errors.groups())) if errors else 0)
    return stats


def phone_requests(gateway: str, sandbox: str, prefix: str) -> tuple[list[str], list[str], list[str]]:
    """(token + encryptedData, login code, one-shot GET) request lines for USERS users."""
    phone, login, oneshot = [], [], []
    for i in range(USERS):
        user = f"{prefix}{i}"
        code = post(f"{sandbox}/_sandbox/bench/wx.login", {"user": user})["code"]
        token = post(f"{gateway}/v1/bench/login", {"code": code})["token"]
        device = post(f"{sandbox}/_sandbox/bench/getPhoneNumber", {"user": user})
        body = json.dumps({"encryptedData": device["encryptedData"], "iv": device["iv"]})
        phone.append(f"POST\t/v1/bench/phone\t{token}\t{body}")
        login.append(f"POST\t/v1/bench/login\t-\t{json.dumps({'code': code})}")
        query = urllib.parse.urlencode({"code": code, "encryptedData": device["encryptedData"], "iv": device["iv"]})
        oneshot.append(f"GET\t/v1/bench/phone?{query}\t-\t")
    return phone, login, oneshot


def micro() -> dict[str, float]:
    """In-process: the decrypt step against a plain pycryptodome decrypt, and the
    pipeline engine with no steps (µs per call)."""
    import base64

    from Crypto.Cipher import AES
    from Crypto.Util.Padding import unpad

    from gateway.pipeline import Pipeline
    from gateway.testing import make_context, make_session
    from gateway.wechat import crypto
    from wxgate_plugins.steps.decrypt import Decrypt, DecryptOptions

    key = crypto.new_session_key()
    payload = {"phoneNumber": "13800138000", "purePhoneNumber": "13800138000", "countryCode": "86",
               "watermark": {"appid": "wx0000000000bench", "timestamp": int(time.time())}}  # fmt: skip
    data, iv = crypto.encrypt_json(key, payload)

    def plain() -> dict[str, Any]:
        cipher = AES.new(base64.b64decode(key), AES.MODE_CBC, base64.b64decode(iv))
        result: dict[str, Any] = json.loads(unpad(cipher.decrypt(base64.b64decode(data)), 16))
        return result

    step = Decrypt(DecryptOptions(kind="phone"))
    ctx = make_context({"encryptedData": data, "iv": iv}, session=make_session(session_key=key))
    loop = asyncio.new_event_loop()
    empty = Pipeline("noop", [])
    n = 20000

    def run_step() -> None:
        loop.run_until_complete(step(ctx))

    def run_empty() -> None:
        loop.run_until_complete(empty.run(ctx))

    async def nothing() -> None:
        return None

    def run_nothing() -> None:
        loop.run_until_complete(nothing())

    figures = {
        "plain_pycryptodome_decrypt_us": timeit.timeit(plain, number=n) / n * 1e6,
        "decrypt_step_us": timeit.timeit(run_step, number=n) / n * 1e6,
        "empty_coroutine_us": timeit.timeit(run_nothing, number=n) / n * 1e6,
        "pipeline_no_steps_us": timeit.timeit(run_empty, number=n) / n * 1e6,
    }
    loop.close()
    return {k: round(v, 2) for k, v in figures.items()}


async def storage_throughput(mongo_uri: str, seconds: float = 3.0) -> dict[str, float]:
    from wxgate_plugins.storages.mongo import MongoOptions, MongoStorage

    options = MongoOptions(uri=mongo_uri, database=f"upserts{int(time.time())}", encryption_key=STORAGE_KEY)
    storage = MongoStorage(options)
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


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    bench = Bench(args, workdir)
    mongo = EmbeddedMongo(db="memory")
    extra: dict[str, Any] = {}
    try:
        mongo_uri = mongo.start()
        assert mongo.process is not None
        sandbox_port = free_port()
        (workdir / "sandbox.yaml").write_text(config_text("memory", mongo_uri, sandbox_port, FLOWS))
        sandbox_proc = bench.procs.start(
            str(BIN / "wxgate"), "sandbox", "--config", str(workdir / "sandbox.yaml"),
            "--port", str(sandbox_port), "--reusable-codes",
        )  # fmt: skip
        sandbox = f"http://127.0.0.1:{sandbox_port}"
        wait_up(sandbox + "/_sandbox/_stats", sandbox_proc)
        bench.watched["sandbox"] = [sandbox_proc.pid]
        bench.watched["mongo-server"] = [mongo.process.pid]

        print("hello-world ceiling", flush=True)
        hello_port = free_port()
        hello = bench.procs.start(sys.executable, str(ROOT / "bench" / "hello.py"), str(hello_port))
        wait_up(f"http://127.0.0.1:{hello_port}/", hello)
        bench.watched["hello"] = [hello.pid]
        bench.wrk(
            "hello-world POST", f"http://127.0.0.1:{hello_port}", ['POST\t/\t-\t{"code": "x"}'], repeat=args.repeat
        )
        bench.rows["hello-world POST"]["rss_mb"] = rss_mb(hello.pid)
        bench.procs.stop(hello)
        del bench.watched["hello"]

        print("gateway, no steps (memory)", flush=True)
        noop, noop_proc = bench.gateway("noop", config_text("memory", mongo_uri, sandbox_port, NOOP_FLOWS))
        bench.wrk("gateway, empty pipeline", noop, ['POST\t/v1/bench/login\t-\t{"code": "x"}'], repeat=args.repeat)
        bench.procs.stop(noop_proc)
        del bench.watched["noop"]

        for storage in [s for s in ("memory", "mongo") if s in args.only]:
            print(f"gateway on {storage}", flush=True)
            url, proc = bench.gateway(storage, config_text(storage, mongo_uri, sandbox_port, FLOWS))
            phone, login, oneshot = phone_requests(url, sandbox, f"{storage}-")
            rss_start = rss_mb(proc.pid)
            row = bench.wrk(f"/phone token+encryptedData ({storage})", url, phone, repeat=args.repeat)
            bench.wrk(f"/login ({storage})", url, login)
            bench.wrk(f"/phone one-shot GET ({storage})", url, oneshot)
            if storage == "mongo" and "baseline" in args.only:
                baseline_url = bench.baseline(mongo_uri, url, phone)
                bench.wrk("/phone hand-written baseline (mongo)", baseline_url, phone, repeat=args.repeat)
                bench.stop_baseline()
            if storage == "memory" and "soak" in args.only:
                # paced at half the measured maximum: latency under moderate load
                half = row["rps"] / 2
                pause = 1000.0 * args.connections / half
                paced = bench.wrk(f"/phone at half max ({storage})", url, phone, pause_ms=pause)
                paced["target_rps"] = round(half)
                # memory after many requests: must not grow with request count
                before = rss_mb(proc.pid)
                soak = bench.wrk(
                    f"/phone x{args.soak_requests} ({storage})",
                    url,
                    phone,
                    duration=args.soak_requests / row["rps"] + 2,
                )
                extra["rss_after_requests"] = {
                    "at_start_mb": rss_start, "before_soak_mb": before, "after_soak_mb": rss_mb(proc.pid),
                    "soak_requests": soak["requests"],
                }  # fmt: skip
            bench.rows[f"/phone token+encryptedData ({storage})"]["rss_mb"] = rss_mb(proc.pid)
            bench.procs.stop(proc)
            del bench.watched[storage]

        print("one worker against two (--processes), empty pipeline, mongo storage", flush=True)
        for processes in (1, 2) if "workers" in args.only else ():
            label = f"workers{processes}"
            url, proc = bench.gateway(
                label, config_text("mongo", mongo_uri, sandbox_port, NOOP_FLOWS), "--processes", str(processes)
            )
            bench.watched[label] = tree(proc.pid)
            bench.wrk(
                f"gateway, empty pipeline, {processes} process(es)", url, ['POST\t/v1/bench/login\t-\t{"code": "x"}']
            )
            bench.procs.stop(proc)
            del bench.watched[label]

        print("storage alone, and in-process timings", flush=True)
        if "micro" in args.only:
            extra["storage"] = asyncio.run(storage_throughput(mongo_uri))
            extra["in_process"] = micro()
    finally:
        bench.procs.stop()
        mongo.stop()
    return {"runs": bench.rows, **extra}


def report(result: dict[str, Any]) -> None:
    rows = result["runs"]
    ceiling = rows["hello-world POST"]["rps"]
    print(f"\n{'run':<48} {'req/s':>8} {'ratio':>6} {'p50 ms':>7} {'p99 ms':>7} {'err':>4}  CPU % by process")
    for name, row in rows.items():
        row["vs_ceiling"] = round(row["rps"] / ceiling, 3)
        cpu = ", ".join(f"{k} {v}" for k, v in row["cpu_percent"].items() if v)
        print(
            f"{name:<48} {row['rps']:>8.0f} {row['vs_ceiling']:>6.2f} {row['p50_ms']:>7} {row['p99_ms']:>7} "
            f"{row['errors']:>4}  {cpu}"
        )
    print()
    for section in ("rss_after_requests", "storage", "in_process"):
        if section in result:
            print(f"{section}: {json.dumps(result[section])}")


def wrk_installed() -> bool:
    """True when the load tool is there; otherwise says how to get it."""
    if shutil.which("wrk") is None:
        print("bench: wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return False
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10, help="seconds per load run (default 10)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--soak-requests", type=int, default=100_000, help="requests for the RSS check")
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs of the ceiling, empty pipeline and /phone; the median counts"
    )
    parser.add_argument(
        "--only",
        type=lambda text: set(text.split(",")),
        default=set(SECTIONS),
        help=f"comma-separated parts to run besides hello-world and the empty pipeline (default: {','.join(SECTIONS)})",
    )
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "latest.json"))
    args = parser.parse_args()
    if not wrk_installed():
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="wxgate-bench-"))
    try:
        result = run(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report(result)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout
    result["commit"] = commit.strip()
    result["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}
    result["settings"] = {"duration_s": args.duration, "connections": args.connections, "repeat": args.repeat}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
