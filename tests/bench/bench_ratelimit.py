"""Rate-limit adherence (design §8): requests_per_minute configured, simulator key_rpm equal.

Run on demand:
    /work/venv/bin/python tests/bench/bench_ratelimit.py [--rpm 1200] [--seconds 60]

The simulator (separate process, 0 ms latency) answers 429 once a sliding 60 s window holds
`key_rpm` calls of the key. batchroute gets more records than the window can take; the send
time of every call (when the client hands it to aiohttp, i.e. after the limiter) is recorded
and the run is stopped after `--seconds`. Figures: calls in [first call, first call + seconds)
as a share of rpm·seconds/60 (target 97–100 %), the busiest sliding 60 s window (must be
≤ rpm) and the 429s received (target 0).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import tempfile
import time
from pathlib import Path

from _harness import load_avg, simulator, write_job

from batchroute.client import OpenRouterClient
from batchroute.errors import UpstreamError
from batchroute.runner import Runner, RunOptions, RunReport
from batchroute.spec import load_spec

SENT: list[float] = []
FIRST = asyncio.Event()
STATUS_429 = 0
_complete = OpenRouterClient.complete


async def _timed_complete(self: OpenRouterClient, payload):  # type: ignore[no-untyped-def]
    global STATUS_429
    SENT.append(time.monotonic())
    FIRST.set()
    try:
        return await _complete(self, payload)
    except UpstreamError as err:
        STATUS_429 += err.status == 429
        raise


async def run(job: Path, url: str, seconds: float) -> RunReport:
    spec = load_spec(job)
    opts = RunOptions(
        api_key="sk-or-v1-bench",
        base_url=url,
        db_path=spec.database_path,
        handle_signals=False,
        log=lambda _line: None,
    )
    runner = Runner(spec, opts)
    task = asyncio.create_task(runner.run())
    await FIRST.wait()
    await asyncio.sleep(seconds - (time.monotonic() - SENT[0]) + 0.5)
    runner._on_signal()  # what Ctrl-C does: stop dispatching, finish in flight
    return await task


def busiest_window(times: list[float], width: float = 60.0) -> int:
    return max((bisect.bisect_left(times, t + width) - i for i, t in enumerate(times)), default=0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rpm", type=int, default=1200)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--concurrency", type=int, default=64)
    a = ap.parse_args()
    OpenRouterClient.complete = _timed_complete  # type: ignore[method-assign]
    print(f"load average before: {load_avg()}")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        n = int(a.rpm * a.seconds / 60 * 1.5) + 100
        job = write_job(tmp, n, concurrency=a.concurrency, requests_per_minute=a.rpm)
        with simulator(scenario={"key_rpm": a.rpm}, tmp=tmp) as sim:
            report = asyncio.run(run(job, sim.url, a.seconds))
    t0 = SENT[0]
    in_window = bisect.bisect_left(SENT, t0 + a.seconds)
    expected = a.rpm * a.seconds / 60
    print(
        f"rpm {a.rpm}: {in_window} calls in the first {a.seconds:g} s = "
        f"{in_window / expected:.1%} of {expected:g} (target 97–100 %); "
        f"busiest 60 s window {busiest_window(SENT)} (≤ {a.rpm}); 429s received {STATUS_429}; "
        f"{report.counts.done} done, status {report.status.value}"
    )
    print(f"load average after: {load_avg()}")


if __name__ == "__main__":
    main()
