"""Client CPU per record: streamed (`stream=True`, SSE parsed as it arrives) vs whole answers.

Run on demand:
    /work/venv/bin/python tests/bench/bench_stream.py [--calls 3000] [--concurrency 64] [--rounds 3]

The simulator runs in its own process at zero latency (`python -m batchroute simulate`), so
`time.process_time()` here is the client's CPU alone: the OpenRouterClient call, aiohttp and
the response parsing. Rounds alternate the two modes; the best round of each is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import MODEL, simulator

from batchroute.client import OpenRouterClient


async def _calls(url: str, n: int, concurrency: int, *, stream: bool) -> tuple[float, float]:
    """CPU and wall seconds for `n` calls with `concurrency` in flight (after a warm-up)."""
    async with OpenRouterClient(url, "sk-or-v1-bench", max_connections=concurrency) as client:
        left = n

        async def worker(wid: int) -> None:
            nonlocal left
            i = 0
            while left > 0:
                left -= 1
                body = {
                    "model": MODEL,
                    "messages": [{"role": "user", "content": f"Translate: bench {wid}-{i}"}],
                    "max_tokens": 200,
                }
                c = await client.complete(body, stream=stream, idle_timeout_s=30)
                assert c.content, c
                assert c.usage.cost is not None, c
                i += 1

        left = min(n, 500)  # warm-up: connections opened, code paths hot
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        left = n
        gc.collect()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        return time.process_time() - cpu0, time.perf_counter() - wall0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    cpu: dict[bool, list[float]] = {False: [], True: []}
    wall: dict[bool, list[float]] = {False: [], True: []}
    with simulator(latency_ms=0) as sim:
        for _ in range(args.rounds):  # alternate, so load from elsewhere hits both modes
            for stream in (False, True):
                c, w = asyncio.run(_calls(sim.url, args.calls, args.concurrency, stream=stream))
                cpu[stream].append(c / args.calls * 1e6)
                wall[stream].append(args.calls / w)
    print(f"{args.calls} calls, concurrency {args.concurrency}, {args.rounds} rounds, 0 ms latency")
    for stream, name in ((False, "non-streamed"), (True, "streamed")):
        print(
            f"  {name:13} best {min(cpu[stream]):6.1f} µs CPU/record, "
            f"median {statistics.median(cpu[stream]):6.1f}  "
            f"({max(wall[stream]):,.0f} req/s best)"
        )
    best = min(cpu[True]) / min(cpu[False])
    median = statistics.median(cpu[True]) / statistics.median(cpu[False])
    print(f"  ratio streamed/non-streamed: {best:.2f}x (best), {median:.2f}x (median)")


if __name__ == "__main__":
    main()
