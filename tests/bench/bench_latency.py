"""Latency-bound throughput: 200 ms fixed simulated latency, concurrency 256 (design §8).

Run on demand:
    /work/venv/bin/python tests/bench/bench_latency.py [--records 12800] [--latency-ms 200]

Target: records/s ≥ 90 % of concurrency / latency (256 / 0.2 s = 1,280/s). The rate counts the
whole run (catalogue fetch, store open and final flush included).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _harness import cpu_self_s, load_avg, run_batchroute, simulator, write_job


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=12_800)
    ap.add_argument("--latency-ms", type=float, default=200)
    ap.add_argument("--concurrency", type=int, default=256)
    a = ap.parse_args()
    ideal = a.concurrency / (a.latency_ms / 1000)
    print(f"load average before: {load_avg()}")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        job = write_job(tmp, a.records, concurrency=a.concurrency, requests_per_minute=None)
        with simulator(latency_ms=a.latency_ms) as sim:
            c0, s0, t0 = cpu_self_s(), sim.cpu_s(), time.perf_counter()
            s, rep = run_batchroute(job, sim.url)
            wall = time.perf_counter() - t0
            client, server = (cpu_self_s() - c0) / wall, (sim.cpu_s() - s0) / wall
    c = rep.counts
    rate = c.done / s
    print(
        f"batchroute: {c.done} done, {c.failed} failed in {s:.2f} s = {rate:,.0f} rec/s "
        f"(CPU: client {client:.0%}, server {server:.0%})"
    )
    print(f"ideal concurrency / latency = {ideal:,.0f}/s; ratio {rate / ideal:.1%} (target ≥ 90 %)")
    print(f"load average after: {load_avg()}")


if __name__ == "__main__":
    main()
