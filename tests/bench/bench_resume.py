"""Resume of a finished job (design §8): the second run, with every record already final,
takes ≤ 10 % of the first run's time (0 ms simulated latency).

Run on demand:
    /work/venv/bin/python tests/bench/bench_resume.py [--records 200000]

Both runs are fresh interpreters against the same DuckDB file and a simulator process; the
times are the runs' own (catalogue fetch, store open, resume query, reading the input).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _harness import load_avg, run_in_subprocess, simulator, write_job


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--concurrency", type=int, default=64)
    a = ap.parse_args()
    print(f"load average before: {load_avg()}")
    with tempfile.TemporaryDirectory() as d:
        job = write_job(Path(d), a.records, concurrency=a.concurrency, requests_per_minute=None)
        with simulator() as sim:
            first = run_in_subprocess(job, sim.url)
            print(f"first run: {first['done']} done in {first['seconds']:.1f} s")
            second = run_in_subprocess(job, sim.url)
            print(
                f"resume: {second['done']} done, {second['skipped']} already final, "
                f"in {second['seconds']:.2f} s"
            )
    ratio = second["seconds"] / first["seconds"]
    print(f"resume / first run = {ratio:.1%} (target ≤ 10 %)")
    print(f"load average after: {load_avg()}")


if __name__ == "__main__":
    main()
