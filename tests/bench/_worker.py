"""One measurement in a fresh interpreter, for `python -m tests.bench` (not collected by pytest).

    python tests/bench/_worker.py SPEC.json OUT.json

SPEC: {"kind": "bare" | "ours", "job": path, "url": simulator URL, "records": n,
"concurrency": c, "loop": "asyncio" | "uvloop"}. OUT gets the run's seconds, records done,
process CPU seconds during the run (all threads, plus the writer process, a child reaped by
the run's end: `cpu_writer_s` is its share) and peak RSS (VmHWM; the writer's apart). The
bare loop is `bench_throughput.bare_loop` on `bench_throughput.payloads` (built before the
clock starts); ours is `_harness.run_batchroute` (store, journal and progress on). Each side
gets a fresh process so that CPU and peak RSS are its own.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

from _harness import cpu_children_s, cpu_self_s, peak_rss_children_kib, peak_rss_kib, run_batchroute


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    if spec.get("loop") == "uvloop":
        import uvloop  # optional: only when the runner was asked for --uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    job = Path(spec["job"])
    if spec["kind"] == "bare":
        from bench_throughput import bare_loop, payloads

        bodies = payloads(job, spec["records"])
        c0, t0 = cpu_self_s() + cpu_children_s(), time.perf_counter()
        done = asyncio.run(bare_loop(spec["url"], bodies, spec["concurrency"]))
        seconds, failed = time.perf_counter() - t0, spec["records"] - done
    else:
        # imported before the clock, as the CLI has them loaded before a run starts
        import batchroute.runner
        import batchroute.spec  # noqa: F401

        c0 = cpu_self_s() + cpu_children_s()
        seconds, rep = run_batchroute(job, spec["url"], Path(spec["db"]))
        done, failed = rep.counts.done, rep.counts.failed
    out = {
        "seconds": seconds,
        "done": done,
        "failed": failed,
        "cpu_s": cpu_self_s() + cpu_children_s() - c0,
        "cpu_writer_s": cpu_children_s(),
        "rss_kib": peak_rss_kib(),
        "rss_writer_kib": peak_rss_children_kib(),
    }
    Path(sys.argv[2]).write_text(json.dumps(out))


if __name__ == "__main__":
    main()
