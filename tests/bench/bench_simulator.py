"""Throughput of the simulator's hot path: POST /chat/completions, clean scenario, 0 latency.

Run on demand: /work/venv/bin/python tests/bench/bench_simulator.py [--seconds 5] [--concurrency 64]
The server runs in a subprocess (its own core); a plain aiohttp client loop drives it.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time

import aiohttp
import orjson

_SERVER = """
import asyncio, sys
from batchroute.simulator import load_scenario, serve
def ready(url):
    print(url, flush=True)
asyncio.run(serve("127.0.0.1", 0, load_scenario("clean"), seed=1, on_ready=ready))
"""


async def _drive(base_url: str, seconds: float, concurrency: int) -> tuple[int, int]:
    url = base_url + "/chat/completions"
    headers = {"Authorization": "Bearer sk-bench", "Content-Type": "application/json"}
    done = 0
    failed = 0
    deadline = time.perf_counter() + seconds

    async def worker(session: aiohttp.ClientSession, wid: int) -> None:
        nonlocal done, failed
        i = 0
        while time.perf_counter() < deadline:
            payload = {
                "model": "openai/gpt-4o-mini",
                "messages": [{"role": "user", "content": f"bench request {wid}-{i}"}],
                "max_tokens": 200,
            }
            async with session.post(url, data=orjson.dumps(payload), headers=headers) as resp:
                body = await resp.read()
                if resp.status == 200 and b'"usage"' in body:
                    done += 1
                else:
                    failed += 1
            i += 1

    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn) as session:
        await asyncio.gather(*(worker(session, w) for w in range(concurrency)))
    return done, failed


async def _drive_raw(base_url: str, seconds: float, concurrency: int) -> tuple[int, int]:
    """Same load from a minimal keep-alive HTTP/1.1 client (far cheaper than aiohttp's)."""
    host, _, rest = base_url.removeprefix("http://").partition(":")
    port = int(rest.split("/", 1)[0])
    done = 0
    failed = 0
    deadline = time.perf_counter() + seconds

    async def worker(wid: int) -> None:
        nonlocal done, failed
        reader, writer = await asyncio.open_connection(host, port)
        i = 0
        while time.perf_counter() < deadline:
            payload = orjson.dumps(
                {
                    "model": "openai/gpt-4o-mini",
                    "messages": [{"role": "user", "content": f"bench request {wid}-{i}"}],
                    "max_tokens": 200,
                }
            )
            writer.write(
                b"POST /api/v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                b"Authorization: Bearer sk-bench\r\nContent-Type: application/json\r\n"
                b"Content-Length: " + str(len(payload)).encode() + b"\r\n\r\n" + payload
            )
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
            body = await reader.readexactly(length)
            if head.startswith(b"HTTP/1.1 200") and b'"usage"' in body:
                done += 1
            else:
                failed += 1
            i += 1
        writer.close()
        await writer.wait_closed()

    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return done, failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument(
        "--client", choices=["aiohttp", "raw"], default="aiohttp", help="load generator"
    )
    args = parser.parse_args()
    drive = _drive if args.client == "aiohttp" else _drive_raw
    proc = subprocess.Popen([sys.executable, "-c", _SERVER], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        base_url = proc.stdout.readline().strip()
        asyncio.run(drive(base_url, 0.5, args.concurrency))  # warm-up
        t0 = time.perf_counter()
        done, failed = asyncio.run(drive(base_url, args.seconds, args.concurrency))
        elapsed = time.perf_counter() - t0
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    print(
        f"simulator: {done / elapsed:,.0f} req/s "
        f"({done} ok, {failed} failed in {elapsed:.1f} s, concurrency {args.concurrency}, "
        f"{args.client} client)"
    )


if __name__ == "__main__":
    main()
