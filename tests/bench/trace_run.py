"""Where a latency-bound run spends its wall time, against the bare loop (issue 11, diagnostic).

Run on demand (not collected by pytest; its figures are not the benchmark's, since the
tracing itself costs a little on both sides):

    python tests/bench/trace_run.py [--latency-ms 200] [--records 10000] [--concurrency 256]
                                    [--side both|ours|bare] [--rounds 1]

Each side runs in a fresh interpreter against a fresh simulator, timed as `_worker.py` times
it (ours: `run_job_async` start to end; bare: `bare_loop` on bodies built before its clock).
Every aiohttp request is wrapped (same wrapper on both sides) to stamp the first request sent,
the moment `concurrency` calls were first in flight, and the last response's headers; the
run's own stages (store open, catalogue, resume join, writer start, end-of-run drain and
close) are stamped by wrapping the functions the runner calls. A 5 ms ticker measures the
event loop's lag, and gc.callbacks the collector's pauses.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import inspect
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _harness import PY, ROOT, load_avg, simulator, write_job  # noqa: E402

T0 = 0.0
CPU0 = [0.0]  # this process's CPU seconds at T0
STAMPS: list[tuple[str, float, float]] = []  # (stage, start, end) seconds from T0
REQ = {"first": -1.0, "full": -1.0, "last": -1.0, "in_flight": 0, "peak": 0, "n": 0}
FED = [0]  # records the feeder has put on a queue (ours), read at the first and the full mark
LAG: list[float] = []
GC: list[tuple[int, float]] = []  # (generation, CPU seconds of the loop's thread)
GC2_AT: list[float] = []  # when each full collection ended, seconds from T0


def now() -> float:
    return time.perf_counter() - T0


def stamp(obj: Any, name: str, label: str | None = None) -> None:
    """Wrap obj.name (sync or async) to record when it ran; nothing if this tree has none."""
    fn = getattr(obj, name, None)
    if fn is None:
        return
    label = label or name
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def awrap(*a: Any, **kw: Any) -> Any:
            s = now()
            try:
                return await fn(*a, **kw)
            finally:
                STAMPS.append((label, s, now()))

        setattr(obj, name, awrap)
    else:

        @functools.wraps(fn)
        def wrap(*a: Any, **kw: Any) -> Any:
            s = now()
            try:
                return fn(*a, **kw)
            finally:
                STAMPS.append((label, s, now()))

        setattr(obj, name, wrap)


def trace_requests(concurrency: int) -> None:
    import aiohttp

    orig = aiohttp.ClientSession._request

    async def _request(self: Any, method: str, url: Any, *a: Any, **kw: Any) -> Any:
        if "chat/completions" not in str(url):
            return await orig(self, method, url, *a, **kw)
        t = now()
        if REQ["first"] < 0:
            REQ["first"] = t
            REQ["fed_first"] = FED[0]
        REQ["in_flight"] += 1
        REQ["n"] += 1
        REQ["peak"] = max(REQ["peak"], REQ["in_flight"])
        if REQ["full"] < 0 and REQ["in_flight"] >= concurrency:
            REQ["full"] = t
            REQ["full_cpu"] = time.process_time() - CPU0[0]  # this process's CPU (all threads)
            REQ["fed_full"] = FED[0]
        try:
            return await orig(self, method, url, *a, **kw)
        finally:
            REQ["in_flight"] -= 1
            REQ["last"] = now()

    aiohttp.ClientSession._request = _request  # type: ignore[method-assign]


async def ticker(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        t = loop.time()
        await asyncio.sleep(0.005)
        LAG.append(loop.time() - t - 0.005)


def trace_gc() -> None:
    start: list[float] = [0.0]

    def cb(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            start[0] = time.thread_time()
        else:
            GC.append((info["generation"], time.thread_time() - start[0]))
            if info["generation"] == 2:
                GC2_AT.append(now())

    gc.callbacks.append(cb)


def trace_ours() -> None:
    from batchroute.runner import book, early, lane, run, setup
    from batchroute.store import result_store, resume

    stamp(book.Book, "start_writer")
    stamp(book.Book, "finish", "book.finish (writer drains, exits)")
    stamp(run.Runner, "_open_store", "open_store (migrate, replay, start_run)")
    try:  # since stop 22 (branch start): the start's own module
        from batchroute.runner import start

        stamp(start.RunStart, "_open_store", "open_store (migrate, replay, start_run)")
        stamp(start.RunStart, "_prepare", "start handed to the writer (fresh or held)")
    except ImportError:
        pass
    stamp(run.Runner, "_close_store", "close_store (finish_run)")
    stamp(run.Runner, "_pump", "pump (feed + workers)")
    stamp(run, "reconcile_earlier_runs")
    stamp(run, "check_key", "check_key (GET /key)")
    stamp(run, "load_catalog", "load_catalog (GET /models, save)")
    stamp(run, "calibrate")
    stamp(run, "save_baseline")
    stamp(result_store.ResultStore, "resume_state")
    stamp(result_store.ResultStore, "resume_lookup", "resume_lookup (pass + join)")
    stamp(result_store.ResultStore, "status_counts")
    stamp(setup, "close_store", "close_store inner")
    stamp(run.Reconciler, "drain", "reconciler.drain")
    stamp(run.OpenRouterClient, "__aexit__", "client session close")
    stamp(run.OpenRouterClient, "key_limit_remaining", "GET /key (sent in Early)")
    stamp(run.OpenRouterClient, "fetch_models", "GET /models (sent in Early)")
    stamp(resume.ResumeLookup, "close", "resume lookup close")
    stamp(run.Runner, "_feed", "feeder")
    try:  # runner/feed.py (lat3): the feeder moved out of run.py
        from batchroute.runner import feed

        stamp(feed.Feeder, "run", "feeder")
        stamp(feed.Feeder, "_switch", "feeder: head → the whole pass")
        from batchroute.runner import resume as rresume

        stamp(rresume.Head, "__init__", "head (first lines, in the pass's thread)")
        put = feed.Feeder._put

        async def counted(self: Any, rec: Any) -> None:
            FED[0] += 1
            await put(self, rec)

        feed.Feeder._put = counted  # type: ignore[method-assign]
    except ImportError:
        pass
    stamp(book.Book, "close", "book.close (last hand-over)")
    stamp(early.StartScan, "_open", "input pass (open_lookup, in a thread)")
    stamp(early.StartScan, "take", "input pass taken (waited for)")
    stamp(lane.Lane, "collect_earlier", "lane.collect_earlier")
    stamp(result_store.ResultStore, "has_line_fps")
    trace_writer()


WRITER_LOG = ""  # where the forked writer process appends its stamps (one JSON line each)


def trace_writer() -> None:
    """The writer process's stages (its transactions' attach, commit and detach), stamped
    from inside it: a forked writer inherits these wrappers and `T0` (perf_counter is the
    machine's monotonic clock, shared across processes) and appends each stamp to a file."""
    import os

    from batchroute import writer
    from batchroute.store import connect, result_store

    def wstamp(obj: Any, name: str, label: str) -> None:
        fn = getattr(obj, name, None)
        if fn is None:
            return

        @functools.wraps(fn)
        def wrap(*a: Any, **kw: Any) -> Any:
            s, c = now(), time.process_time()
            try:
                return fn(*a, **kw)
            finally:
                if os.getpid() != MAIN_PID[0]:  # only in the writer process
                    cpu = (time.process_time() - c) * 1e3
                    line = json.dumps([f"writer: {label} [CPU {cpu:.1f} ms]", s, now()]) + "\n"
                    with open(WRITER_LOG, "a") as f:
                        f.write(line)

        setattr(obj, name, wrap)

    wstamp(writer, "_apply", "apply segment(s)")
    wstamp(writer, "end", "finish order (end_run)")
    wstamp(writer, "begin", "begin order")
    wstamp(connect, "_retrying", "attach")
    wstamp(connect.KeptInstance, "_detach", "detach (checkpoint)")
    wstamp(result_store.ResultStore, "write_segments", "write_segments")
    wstamp(result_store.ResultStore, "end_run", "end_run")


MAIN_PID = [0]


def child(spec: dict[str, Any]) -> dict[str, Any]:
    global T0
    job, conc = Path(spec["job"]), spec["concurrency"]
    trace_requests(conc)
    trace_gc()
    if spec.get("freeze"):
        gc.freeze()  # everything alive before the clock: never scanned again
    if spec["kind"] == "bare":
        from _worker import bodies_from_input
        from bench_throughput import bare_loop

        bodies = bodies_from_input(job)  # read and rendered inside the clock, as in _worker.py

        async def main() -> int:
            stop = asyncio.Event()
            tick = asyncio.create_task(ticker(stop))
            try:
                return await bare_loop(spec["url"], bodies, conc)
            finally:
                stop.set()
                await tick

        T0, CPU0[0] = time.perf_counter(), time.process_time()
        done = asyncio.run(main())
    else:
        from _harness import run_batchroute

        import batchroute.runner
        import batchroute.spec  # noqa: F401

        global WRITER_LOG
        import os

        MAIN_PID[0] = os.getpid()
        WRITER_LOG = str(Path(spec["db"]).with_suffix(".writer-stamps"))
        trace_ours()
        from batchroute.runner import run as run_mod
        from batchroute.spec import load_spec

        t = time.perf_counter()
        load_spec(job)
        STAMPS.append(("(load_spec, outside the clock, once more)", 0.0, time.perf_counter() - t))

        orig = run_mod.Runner.run

        async def traced(self: Any) -> Any:
            STAMPS.append(("Runner.run entered", now(), now()))
            stop = asyncio.Event()
            tick = asyncio.create_task(ticker(stop))
            try:
                return await orig(self)
            finally:
                stop.set()
                await tick

        run_mod.Runner.run = traced  # type: ignore[method-assign]
        T0, CPU0[0] = time.perf_counter(), time.process_time()
        _, rep = run_batchroute(job, spec["url"], Path(spec["db"]))
        done = rep.counts.done
        with contextlib.suppress(FileNotFoundError):
            for line in Path(WRITER_LOG).read_text().splitlines():
                STAMPS.append(tuple(json.loads(line)))  # type: ignore[arg-type]
    end = now()
    lag = sorted(LAG) or [0.0]
    return {
        "kind": spec["kind"],
        "done": done,
        "end": end,
        "req": REQ,
        "stamps": STAMPS,
        "lag_p50_ms": lag[len(lag) // 2] * 1e3,
        "lag_p99_ms": lag[int(len(lag) * 0.99)] * 1e3,
        "lag_max_ms": lag[-1] * 1e3,
        "lag_over_20ms_s": sum(x for x in lag if x > 0.02),
        "gc": {
            g: [
                sum(1 for x, _ in GC if x == g),
                sum(t for x, t in GC if x == g) * 1e3,
                max((t for x, t in GC if x == g), default=0) * 1e3,
            ]
            for g in (0, 1, 2)
        },
        "gc2_at_ms": [t * 1e3 for t in GC2_AT],
    }


def show(r: dict[str, Any], conc: int, lat_s: float) -> None:
    q = r["req"]
    n, end = r["done"], r["end"]
    busy = q["last"] - q["first"]
    print(f"--- {r['kind']}: {n} done in {end:.3f} s = {n / end:,.0f} rec/s")
    fed = f" ({q['fed_first']} records fed by then)" if "fed_first" in q else ""
    print(f"  first request sent      {q['first'] * 1e3:8.1f} ms{fed}")
    print(
        f"  {conc} in flight at      {q['full'] * 1e3:8.1f} ms (peak {q['peak']}; "
        f"{q.get('full_cpu', 0) * 1e3:.1f} ms of this process's CPU by then"
        + (f"; {q['fed_full']} records fed)" if "fed_full" in q else ")")
    )
    print(f"  last response headers   {q['last'] * 1e3:8.1f} ms")
    print(f"  run end                 {end * 1e3:8.1f} ms (tail {(end - q['last']) * 1e3:.1f} ms)")
    print(
        f"  between first and last: {busy:.3f} s = {n / busy:,.0f} rec/s; "
        f"ideal {n / conc * lat_s:.3f} s"
    )
    for label, s, e in sorted(r["stamps"], key=lambda x: x[1]):
        print(f"    {label:42s} {s * 1e3:8.1f} → {e * 1e3:8.1f} ms ({(e - s) * 1e3:7.1f})")
    print(
        f"  loop lag (5 ms ticker): p50 {r['lag_p50_ms']:.2f} ms, p99 {r['lag_p99_ms']:.1f} ms, "
        f"max {r['lag_max_ms']:.1f} ms, {r['lag_over_20ms_s']:.3f} s in ticks late > 20 ms"
    )
    for g, (n, total, longest) in r["gc"].items():
        print(f"  gc gen {g}: {n} passes, {total:.1f} ms CPU, longest {longest:.1f} ms")
    if r.get("gc2_at_ms"):
        print("  gc gen 2 ended at " + ", ".join(f"{t:.1f}" for t in r["gc2_at_ms"]) + " ms")


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        spec = json.loads(Path(sys.argv[2]).read_text())
        print(json.dumps(child(spec)))
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--latency-ms", type=int, default=200)
    ap.add_argument("--records", type=int, default=10_000)
    ap.add_argument("--concurrency", type=int, default=256)
    ap.add_argument("--side", default="both", choices=["both", "ours", "bare"])
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--freeze", action="store_true", help="experiment: gc.freeze() at the start")
    a = ap.parse_args()
    print(f"load average before: {load_avg()}")
    kinds = ["bare", "ours"] if a.side == "both" else [a.side]
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        job = write_job(tmp, a.records, concurrency=a.concurrency, requests_per_minute=None)
        for rnd in range(a.rounds):
            for kind in kinds if rnd % 2 == 0 else kinds[::-1]:
                with simulator(latency_ms=a.latency_ms) as sim:
                    spec = {"kind": kind, "job": str(job), "url": sim.url, "records": a.records}
                    spec |= {"concurrency": a.concurrency, "db": str(tmp / f"{kind}{rnd}.duckdb")}
                    spec["freeze"] = a.freeze
                    p = tmp / "spec.json"
                    p.write_text(json.dumps(spec))
                    out = subprocess.run(
                        [PY, __file__, "--child", str(p)],
                        check=True,
                        capture_output=True,
                        text=True,
                        cwd=ROOT,
                    )
                r = json.loads(out.stdout.strip().splitlines()[-1])
                show(r, a.concurrency, a.latency_ms / 1e3)
    print(f"load average after: {load_avg()}")


if __name__ == "__main__":
    main()
