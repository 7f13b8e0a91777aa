#!/usr/bin/env python3
"""Soak: a bounded run at half the measured capacity with good and bad requests mixed.

    python bench/soak.py [--minutes 5] [--connections 16]

One gateway process on `memory` storage and the sandbox upstream, each in its own
process on 127.0.0.1. Two paced wrk loads run side by side: good /phone requests (must
all succeed) and bad ones (unknown tokens, damaged data, broken JSON: must all be 4xx).
RSS and open file descriptors of the gateway are sampled every 5 s: both must stay flat.
Not part of the test suite; record its figures in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import (  # noqa: E402
    BIN,
    FLOWS,
    WRK_SCRIPT,
    Procs,
    config_text,
    parse_wrk,
    phone_requests,
    rss_mb,
    wait_up,
)
from wxgate_plugins.storages.embedded_mongo import free_port  # noqa: E402

BAD = [
    'POST\t/v1/bench/phone\tnot-a-token\t{"encryptedData": "AAAA", "iv": "AAAA"}',
    'POST\t/v1/bench/phone\t-\t{"encryptedData": "AAAA"}',
    'POST\t/v1/bench/login\t-\t{"code": ',
    'POST\t/v1/bench/login\t-\t{"code": 12}',
    'POST\t/v1/nope/login\t-\t{"code": "x"}',
    "GET\t/v1/bench/login\t-\t",
]


def fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "soak.json"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="wxgate-soak-"))
    (work / "r.lua").write_text(WRK_SCRIPT)
    procs = Procs()
    samples: list[dict[str, float]] = []
    try:
        sandbox_port, port = free_port(), free_port()
        (work / "c.yaml").write_text(config_text("memory", "", sandbox_port, FLOWS))
        sandbox = procs.start(
            str(BIN / "wxgate"), "sandbox", "--config", str(work / "c.yaml"), "--port", str(sandbox_port)
        )
        wait_up(f"http://127.0.0.1:{sandbox_port}/_sandbox/_stats", sandbox)
        gateway = procs.start(str(BIN / "wxgate"), "serve", "--config", str(work / "c.yaml"), "--port", str(port))
        url = f"http://127.0.0.1:{port}"
        wait_up(url + "/healthz", gateway)
        good, _, _ = phone_requests(url, f"http://127.0.0.1:{sandbox_port}", "soak-")
        (work / "good.tsv").write_text("\n".join(good) + "\n")
        (work / "bad.tsv").write_text("\n".join(BAD) + "\n")

        def wrk(data: str, seconds: float, pause_ms: float) -> dict[str, Any]:
            out = subprocess.run(
                ["wrk", "-t1", f"-c{args.connections}", f"-d{int(seconds)}s", "--latency", "-s", str(work / "r.lua"),
                 url, "--", str(work / data), str(pause_ms)],
                capture_output=True, text=True, check=True, timeout=seconds + 60,
            ).stdout  # fmt: skip
            return parse_wrk(out)

        capacity = wrk("good.tsv", 5, 0)["rps"]
        rate = capacity / 2
        good_pause = 1000.0 * args.connections / (rate * 0.9)
        bad_pause = 1000.0 * args.connections / (rate * 0.1)
        seconds = args.minutes * 60
        results: dict[str, dict[str, Any]] = {}

        def load(name: str, data: str, pause: float) -> None:
            results[name] = wrk(data, seconds, pause)

        threads = [
            threading.Thread(target=load, args=("good", "good.tsv", good_pause)),
            threading.Thread(target=load, args=("bad", "bad.tsv", bad_pause)),
        ]
        for thread in threads:
            thread.start()
        started = time.monotonic()
        while any(t.is_alive() for t in threads):
            samples.append(
                {"t": round(time.monotonic() - started), "rss_mb": rss_mb(gateway.pid), "fds": fds(gateway.pid)}
            )
            time.sleep(5)
        for thread in threads:
            thread.join()
    finally:
        procs.stop()
        shutil.rmtree(work, ignore_errors=True)
    steady = samples[2:] if len(samples) > 3 else samples  # after wrk has opened its connections
    report = {
        "capacity_rps": capacity,
        "target_rps": round(rate),
        "good": results["good"],
        "bad": results["bad"],
        "rss_mb": {
            "steady_first": steady[0]["rss_mb"],
            "last": steady[-1]["rss_mb"],
            "max": max(s["rss_mb"] for s in steady),
        },
        "fds": {"steady_first": steady[0]["fds"], "last": steady[-1]["fds"], "max": max(s["fds"] for s in steady)},
        "samples": samples,
    }
    print(json.dumps({k: v for k, v in report.items() if k != "samples"}, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    good_ok = results["good"]["errors"] == 0
    bad_ok = results["bad"]["errors"] == results["bad"]["requests"]  # all non-2xx
    print(f"good requests all 200: {good_ok}; bad requests all refused: {bad_ok}")
    return 0 if good_ok and bad_ok else 1


if __name__ == "__main__":
    sys.exit(main())
