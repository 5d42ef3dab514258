"""Peak memory (design §8): peak RSS of a 200k-record run ≤ 1.3 × that of a 10k-record run.

Run on demand:
    /work/venv/bin/python tests/bench/bench_memory.py [--small 10000] [--large 200000]

Each run is a fresh interpreter (same job, clean simulator in its own process, 0 ms latency,
store and progress on); its peak RSS is VmHWM from /proc/self/status at the end of the run.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _harness import load_avg, run_in_subprocess, simulator, write_job


def measure(n: int, concurrency: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as d:
        job = write_job(Path(d), n, concurrency=concurrency, requests_per_minute=None)
        with simulator() as sim:
            r = run_in_subprocess(job, sim.url)
    print(
        f"{n:>7} records: {r['done']} done in {r['seconds']:.1f} s, "
        f"peak RSS {r['rss_kib'] / 1024:.1f} MiB"
    )
    return r


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--small", type=int, default=10_000)
    ap.add_argument("--large", type=int, default=200_000)
    ap.add_argument("--concurrency", type=int, default=64)
    a = ap.parse_args()
    print(f"load average before: {load_avg()}")
    small = measure(a.small, a.concurrency)
    large = measure(a.large, a.concurrency)
    ratio = large["rss_kib"] / small["rss_kib"]
    print(f"peak RSS ratio {a.large} / {a.small} = {ratio:.2f} (target ≤ 1.3)")
    print(f"load average after: {load_avg()}")


if __name__ == "__main__":
    main()
