#!/usr/bin/env python3
"""wxgate's ``/phone`` against the hand-written baseline, runs alternating, for a ratio that a
busy host moves less than two separate runs minutes apart.

    python bench/phone_vs_baseline.py [--pairs 4] [--duration 6] [--connections 32]

One nx-27017 (in memory), the sandbox upstream, one wxgate gateway on the ``mongo`` storage
(no webhook endpoint) and bench/baseline_phone.py on the same server with the same users,
tokens and session keys, all started once; then ``--pairs`` times: a wrk run against the
gateway, then one against the baseline. Prints each run, the medians, the ratio of the
medians, and each process's CPU per request (from its own rusage: the figure that carries
over when the load moves). Everything on 127.0.0.1; every run bounded in time.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import run as common
from wxgate_plugins.storages.embedded_mongo import EmbeddedMongo, free_port


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=4, help="gateway/baseline run pairs (default 4)")
    parser.add_argument("--duration", type=float, default=6, help="seconds per run (default 6)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    args = parser.parse_args()
    if not common.wrk_installed():
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="wxgate-phone-vs-baseline-"))
    bench = common.Bench(argparse.Namespace(duration=args.duration, connections=args.connections), workdir)
    mongo = EmbeddedMongo(db="memory")
    try:
        uri = mongo.start()
        assert mongo.process is not None
        bench.watched["mongo-server"] = [mongo.process.pid]
        sandbox_port = free_port()
        (workdir / "sandbox.yaml").write_text(common.config_text("memory", uri, sandbox_port, common.FLOWS))
        sandbox = bench.procs.start(
            str(common.BIN / "wxgate"), "sandbox", "--config", str(workdir / "sandbox.yaml"),
            "--port", str(sandbox_port), "--reusable-codes",
        )  # fmt: skip
        sandbox_url = f"http://127.0.0.1:{sandbox_port}"
        common.wait_up(sandbox_url + "/_sandbox/_stats", sandbox)
        gateway, _ = bench.gateway("gateway", common.config_text("mongo", uri, sandbox_port, common.FLOWS))
        phone, _, _ = common.phone_requests(gateway, sandbox_url, "pair-")
        baseline = bench.baseline(uri, gateway, phone)
        rows: dict[str, list[dict[str, float]]] = {"gateway": [], "baseline": []}
        for _ in range(args.pairs):
            for label, url in (("gateway", gateway), ("baseline", baseline)):
                row = bench.wrk(label, url, phone)
                rps = float(row["rps"])
                # CPU per request, ms: the process's share of the run over the requests it served
                per_request = {
                    name: round(10 * percent / rps, 2)
                    for name, percent in row["cpu_percent"].items()
                    if name in (label, "mongo-server") and rps
                }
                rows[label].append({"rps": rps, **per_request})
        bench.stop_baseline()
    finally:
        bench.procs.stop()
        mongo.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    medians = {label: statistics.median(r["rps"] for r in runs) for label, runs in rows.items()}
    print()
    for label, runs in rows.items():
        cpu = {name: statistics.median(r[name] for r in runs) for name in (label, "mongo-server") if name in runs[0]}
        each = ", ".join(f"{r['rps']:.0f}" for r in runs)
        spent = ", ".join(f"{name} {ms:.2f}" for name, ms in cpu.items())
        print(f"{label:9} req/s {each}; median {medians[label]:.0f}; CPU ms per request: {spent}")
    print(f"/phone ÷ baseline (medians): {medians['gateway'] / medians['baseline']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
