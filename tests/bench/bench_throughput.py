"""Throughput at zero simulated latency: batchroute vs a bare aiohttp loop (design §8).

Run on demand:
    /work/venv/bin/python tests/bench/bench_throughput.py [--records 20000] [--concurrency 64]

Both sides talk to a fresh simulator process (clean scenario, 0 ms) with the same concurrency
and the same request bodies (rendered with the job's prompt, same model and parameters).
batchroute runs with its store (a real DuckDB file) and progress (no TTY) on. Target: ≥ 50 %.
The two are interleaved (--rounds pairs) so that load from other processes hits both alike.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from _harness import MODEL, cpu_self_s, load_avg, records, run_batchroute, simulator, write_job

from batchroute.prompt import render_messages, request_params
from batchroute.spec import load_spec


def payloads(job: Path, n: int) -> list[dict[str, Any]]:
    spec = load_spec(job)
    params = request_params(spec.request)
    return [
        {
            "model": MODEL,
            "messages": render_messages(spec.prompt, r),
            **params,
            "usage": {"include": True},
        }
        for r in records(n)
    ]


async def bare_loop(base_url: str, bodies: list[dict[str, Any]], concurrency: int) -> int:
    """The baseline: N workers pulling bodies, POST, read, parse JSON. Nothing else."""
    url = base_url + "/chat/completions"
    headers = {"Authorization": "Bearer sk-bench", "Content-Type": "application/json"}
    it = iter(bodies)
    ok = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal ok
        for body in it:
            async with session.post(url, data=orjson.dumps(body)) as resp:
                doc = orjson.loads(await resp.read())
                if resp.status == 200 and doc.get("choices"):
                    ok += 1

    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(headers=headers, connector=conn) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return ok


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=20_000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2, help="bare/batchroute pairs, interleaved")
    a = ap.parse_args()
    print(f"load average before: {load_avg()}")
    bare: list[float] = []
    ours: list[float] = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        job = write_job(tmp, a.records, concurrency=a.concurrency, requests_per_minute=None)
        bodies = payloads(job, a.records)
        for rnd in range(1, a.rounds + 1):
            with simulator() as sim:  # a fresh simulator for every measurement
                t0, c0, s0 = time.perf_counter(), cpu_self_s(), sim.cpu_s()
                ok = asyncio.run(bare_loop(sim.url, bodies, a.concurrency))
                s = time.perf_counter() - t0
                cc, sc = (cpu_self_s() - c0) * 1000 / ok, (sim.cpu_s() - s0) * 1000 / ok
            bare.append(ok / s)
            print(
                f"[{rnd}] bare aiohttp loop: {ok} ok in {s:.2f} s = {ok / s:,.0f} req/s "
                f"(CPU ms/request: client {cc:.2f}, server {sc:.2f}; load {load_avg()})"
            )
            (tmp / "results.duckdb").unlink(missing_ok=True)
            with simulator() as sim:
                c0, s0 = cpu_self_s(), sim.cpu_s()
                s, rep = run_batchroute(job, sim.url)
                done = rep.counts.done
                cc, sc = (cpu_self_s() - c0) * 1000 / done, (sim.cpu_s() - s0) * 1000 / done
            ours.append(done / s)
            print(
                f"[{rnd}] batchroute: {done} done, {rep.counts.failed} failed in {s:.2f} s = "
                f"{done / s:,.0f} rec/s (CPU ms/record: client {cc:.2f}, server {sc:.2f}; "
                f"{rep.status.value}; load {load_avg()})"
            )
            print(f"[{rnd}] ratio batchroute / bare = {ours[-1] / bare[-1]:.1%}")
    print(
        f"overall: batchroute {sum(ours) / len(ours):,.0f} rec/s / bare "
        f"{sum(bare) / len(bare):,.0f} req/s = {sum(ours) / sum(bare):.1%} (target ≥ 50 %)"
    )


if __name__ == "__main__":
    main()
