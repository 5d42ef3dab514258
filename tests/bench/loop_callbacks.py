"""Where the run's event loop spends its CPU, by callback (issue 11, diagnostic; stop 25).

Run on demand (not collected by pytest; the wrapping costs every callback ~1 µs):

    python tests/bench/loop_callbacks.py [--latency-ms 200] [--records 10000]
                                         [--concurrency 256] [--side ours|bare] [--stalls]

One side in this process against a fresh simulator: every event-loop callback is wrapped to
add its thread CPU under its name (a task's coroutine, or the callback's own name), so the
work a timer or a period drives (`Journal._write_pending` once per loop step with rows,
`Book.writer`'s hand-overs, `IdQueue._hand_on`) is told apart from the per-call work (the
worker's step, aiohttp's reads and writes). Printed: CPU per record of the process, of the
loop thread and of the other threads (the journal's syncer, the input pass), loop iterations
per record, and the top callbacks. `--stalls` lists the callbacks that took > 3 ms of wall
time with their thread CPU: a long callback with little CPU was preempted or waited for the
GIL, not busy.
"""

from __future__ import annotations

import argparse
import asyncio
import asyncio.base_events
import asyncio.events
import collections
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _harness import load_avg, run_batchroute, simulator, write_job  # noqa: E402

CPU: collections.Counter[str] = collections.Counter()
RUNS: collections.Counter[str] = collections.Counter()
STALLS: list[tuple[float, float, float, str]] = []  # (at s, wall ms, thread CPU ms, name)
LOOPS = [0]
T0 = [0.0]


def _name(cb: Any) -> str:
    owner = getattr(cb, "__self__", None)
    if owner is not None and hasattr(owner, "get_coro"):
        coro = owner.get_coro()
        return "task " + getattr(coro, "__qualname__", repr(coro))
    return getattr(cb, "__qualname__", None) or type(cb).__name__


def wrap_loop() -> None:
    run = asyncio.events.Handle._run
    once = asyncio.base_events.BaseEventLoop._run_once  # type: ignore[attr-defined]

    def _run(self: asyncio.events.Handle) -> None:
        w, c = time.perf_counter(), time.thread_time()
        run(self)
        cpu, wall = time.thread_time() - c, time.perf_counter() - w
        name = _name(self._callback)  # type: ignore[attr-defined]
        CPU[name] += cpu
        RUNS[name] += 1
        if wall > 0.003:
            STALLS.append((w - T0[0], wall * 1e3, cpu * 1e3, name))

    def _run_once(self: Any) -> None:
        LOOPS[0] += 1
        once(self)

    asyncio.events.Handle._run = _run  # type: ignore[method-assign]
    asyncio.base_events.BaseEventLoop._run_once = _run_once  # type: ignore[attr-defined]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--latency-ms", type=float, default=200)
    ap.add_argument("--records", type=int, default=10_000)
    ap.add_argument("--concurrency", type=int, default=256)
    ap.add_argument("--side", default="ours", choices=["ours", "bare"])
    ap.add_argument("--stalls", action="store_true")
    a = ap.parse_args()
    import batchroute.runner
    import batchroute.spec  # noqa: F401 - imported before the clock, as the CLI has them

    wrap_loop()
    print(f"load average before: {load_avg()}")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        job = write_job(tmp, a.records, concurrency=a.concurrency, requests_per_minute=None)
        with simulator(latency_ms=a.latency_ms) as sim:
            c0, t0, tc0 = time.process_time(), time.perf_counter(), time.thread_time()
            T0[0] = t0
            if a.side == "bare":
                from _worker import bodies_from_input
                from bench_throughput import bare_loop

                done = asyncio.run(bare_loop(sim.url, bodies_from_input(job), a.concurrency))
            else:
                _, rep = run_batchroute(job, sim.url, tmp / "x.duckdb")
                done = rep.counts.done
            wall = time.perf_counter() - t0
            cpu, loop_cpu = time.process_time() - c0, time.thread_time() - tc0
    per = 1e6 / max(1, done)
    print(
        f"{a.side}, {a.latency_ms:g} ms: {done} in {wall:.2f} s = {done / wall:,.0f}/s; CPU "
        f"{cpu * per:.0f} µs a record (loop thread {loop_cpu * per:.0f}, other threads "
        f"{(cpu - loop_cpu) * per:.0f}; the writer process not counted); "
        f"{done / max(1, LOOPS[0]):.1f} records a loop iteration"
    )
    print(f"callbacks: {sum(CPU.values()) * per:.0f} µs a record")
    for name, c in CPU.most_common(16):
        n = RUNS[name]
        print(f"  {c * per:7.1f} µs/record {n:8d} runs {c * 1e6 / n:8.1f} µs/run  {name}")
    if a.stalls:
        late = sorted(STALLS, key=lambda s: -s[1])
        wall_ms, cpu_ms = sum(s[1] for s in late), sum(s[2] for s in late)
        print(f"callbacks > 3 ms wall: {len(late)}, {wall_ms:.0f} ms wall, {cpu_ms:.0f} ms CPU")
        for at, w, c, name in late[:12]:
            print(f"  at {at * 1e3:8.1f} ms: {w:6.1f} ms wall, {c:5.1f} ms CPU  {name}")
    print(f"load average after: {load_avg()}")


if __name__ == "__main__":
    main()
