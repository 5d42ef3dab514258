"""One measurement in a fresh interpreter, for `python -m tests.bench` (not collected by pytest).

    python tests/bench/_worker.py SPEC.json OUT.json

SPEC: {"kind": "bare" | "ours", "job": path, "url": simulator URL, "records": n,
"concurrency": c, "loop": "asyncio" | "uvloop", "bodies": "inside" (default) | "before"}.
OUT gets the run's seconds, records done, process CPU seconds during the run (all threads,
plus the writer process, a child reaped by the run's end: `cpu_writer_s` is its share) and
peak RSS (VmHWM; the writer's apart), and the epoch time its clock stopped (`wall_end`: the
runner counts the seconds from this process's spawn too, interpreter start and imports in).

The bare loop is `bench_throughput.bare_loop`. By default its bodies are read from the job's
input file and rendered inside its clock as its workers pull them (`bodies_from_input`: the
work ours does inside its clock); with "bodies": "before", on `bench_throughput.payloads`,
all built before the clock starts (as measured until issue 11). Ours is
`_harness.run_batchroute` (store, journal and progress on). Each side gets a fresh process so
that CPU and peak RSS are its own.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from _harness import cpu_children_s, cpu_self_s, peak_rss_children_kib, peak_rss_kib, run_batchroute


def clock() -> tuple[float, float]:
    return cpu_self_s() + cpu_children_s(), time.perf_counter()


def bodies_from_input(job: Path) -> Iterator[dict[str, Any]]:
    """The bare loop's request bodies, built lazily as its workers pull them: each input line
    read from the job's input file, parsed and rendered with the job's prompt, the same bodies
    as `bench_throughput.payloads`. The job file itself is parsed first, outside the clock, as
    `_harness.run_batchroute` parses ours outside it. So both sides' clocks cover reading the
    input and building each request (issue 11: the bare loop's bodies used to be built before
    its clock, ours inside)."""
    import orjson
    from bench_throughput import MODEL

    from batchroute.prompt import render_messages, request_params
    from batchroute.spec import load_spec

    spec = load_spec(job)
    params = request_params(spec.request)

    def gen() -> Iterator[dict[str, Any]]:
        with spec.input.open("rb") as fh:
            for line in fh:
                r = orjson.loads(line)
                msgs = render_messages(spec.prompt, r)
                yield {"model": MODEL, "messages": msgs, **params, "usage": {"include": True}}

    return gen()


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    if spec.get("loop") == "uvloop":
        import uvloop  # optional: only when the runner was asked for --uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    job = Path(spec["job"])
    if spec["kind"] == "bare":
        from bench_throughput import bare_loop, payloads

        if spec.get("bodies") == "before":  # the old way: every body built before the clock
            bodies: Iterable[dict[str, Any]] = payloads(job, spec["records"])
            c0, t0 = cpu_self_s() + cpu_children_s(), time.perf_counter()
        else:  # as ours: the job file parsed before the clock, the input read and rendered in it
            bodies = bodies_from_input(job)  # a generator: nothing read yet
            c0, t0 = clock()
        done = asyncio.run(bare_loop(spec["url"], bodies, spec["concurrency"]))
        seconds, failed = time.perf_counter() - t0, spec["records"] - done
        wall_end = time.time()
        status = "completed" if done == spec["records"] else "incomplete"
    else:
        # imported before the clock, as the CLI has them loaded before a run starts
        import batchroute.runner
        import batchroute.spec  # noqa: F401

        c0 = cpu_self_s() + cpu_children_s()
        seconds, rep = run_batchroute(job, spec["url"], Path(spec["db"]))
        wall_end = time.time()
        done, failed, status = rep.counts.done, rep.counts.failed, rep.status.value
    out = {
        "seconds": seconds,
        "done": done,
        "failed": failed,
        "status": status,
        "cpu_s": cpu_self_s() + cpu_children_s() - c0,
        "cpu_writer_s": cpu_children_s(),
        "rss_kib": peak_rss_kib(),
        "rss_writer_kib": peak_rss_children_kib(),
        "wall_end": wall_end,  # epoch seconds: the runner counts from the process's spawn
    }
    Path(sys.argv[2]).write_text(json.dumps(out))


if __name__ == "__main__":
    main()
