"""Before/after in one run: the bare loop and batchroute from several source trees,
interleaved round by round (issue 11); at 0 ms by default, or at `--latency-ms`.

    .venv/bin/python tests/bench/compare_trees.py before=/tmp/main-copy after=. [--rounds 4]
        [--records 20000] [--concurrency 128] [--latency-ms 0]

    (200 ms, issue 11's second figure: --latency-ms 200 --records 10000 --concurrency 256)

Each tree is a checkout (e.g. `git archive <commit> | tar -x -C /tmp/main-copy`); each
measurement runs that tree's own `tests/bench/_worker.py` with that tree first on the import
path (its batchroute, its writer process), in a fresh interpreter against a fresh simulator,
and the order flips every round, as `python -m tests.bench` does for ours and the bare loop.
Printed per tree: client CPU per record as a multiple of the bare loop's in the same round
(median and range), the writer process's share, the run's own process alone, and the rate.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _harness import ROOT, load_avg, simulator, write_job


def measure(tree: Path | None, job: Path, url: str, n: int, conc: int, tmp: Path) -> dict[str, Any]:
    """One side in a fresh interpreter: the bare loop (tree None) or `tree`'s batchroute."""
    root = tree or ROOT
    tag = f"m{time.monotonic_ns()}"
    spec = {"kind": "ours" if tree else "bare", "job": str(job), "url": url, "records": n}
    spec |= {"concurrency": conc, "loop": "asyncio", "db": str(tmp / f"{tag}.duckdb")}
    (tmp / f"{tag}.json").write_text(json.dumps(spec))
    out = tmp / f"{tag}.out.json"
    env = {**os.environ, "PYTHONPATH": str(root)}
    cmd = [sys.executable, str(root / "tests/bench/_worker.py"), str(tmp / f"{tag}.json"), str(out)]
    subprocess.run(cmd, check=True, timeout=1800, cwd=root, env=env)
    r: dict[str, Any] = json.loads(out.read_text())
    for p in tmp.glob(f"{tag}.duckdb*"):
        p.unlink()
    r["rate"] = r["done"] / r["seconds"]
    r["cpu_us"] = r["cpu_s"] * 1e6 / max(1, r["done"])
    r["writer_us"] = r["cpu_writer_s"] * 1e6 / max(1, r["done"])
    return r


def span(xs: list[float], f: str) -> str:
    return f"{f.format(statistics.median(xs))} ({f.format(min(xs))}–{f.format(max(xs))})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("trees", nargs="+", help="label=path of a source tree")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--records", type=int, default=20_000)
    ap.add_argument("--concurrency", type=int, default=128)
    ap.add_argument("--latency-ms", type=float, default=0.0)
    a = ap.parse_args()
    bound = a.concurrency / (a.latency_ms / 1000) if a.latency_ms else None
    trees: dict[str, Path | None] = {"bare": None}
    trees |= {k: Path(v).resolve() for k, v in (t.split("=", 1) for t in a.trees)}
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in trees}
    print(f"load before: {load_avg()}")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        job = write_job(tmp, a.records, concurrency=a.concurrency, requests_per_minute=None)
        order = list(trees)
        for rnd in range(a.rounds):
            for label in order if rnd % 2 == 0 else order[::-1]:
                with simulator(latency_ms=a.latency_ms) as sim:
                    r = measure(trees[label], job, sim.url, a.records, a.concurrency, tmp)
                runs[label].append(r)
                print(
                    f"[{rnd + 1}] {label}: {r['rate']:,.0f} rec/s, CPU {r['cpu_us']:.0f} µs/record "
                    f"(writer {r['writer_us']:.0f}); load {load_avg()}",
                    flush=True,
                )
    bare = runs["bare"]
    for label in order[1:]:
        rs = runs[label]
        cpu = [x["cpu_us"] / y["cpu_us"] for x, y in zip(rs, bare, strict=True)]
        own = [(x["cpu_us"] - x["writer_us"]) / y["cpu_us"] for x, y in zip(rs, bare, strict=True)]
        rate = [x["rate"] / y["rate"] for x, y in zip(rs, bare, strict=True)]
        if bound is not None:
            of = [x["rate"] / bound for x in rs]
            print(f"{label}: rate / bound {bound:,.0f} {span(of, '{:.3f}')} (bare "
                  f"{span([x['rate'] / bound for x in bare], '{:.3f}')})")  # fmt: skip
        writer = [x["writer_us"] for x in rs]
        print(
            f"{label}: client CPU × bare {span(cpu, '{:.2f}')}; the run's process alone × bare "
            f"{span(own, '{:.2f}')}; writer µs/record {span(writer, '{:.0f}')}; CPU µs/record "
            f"{span([x['cpu_us'] for x in rs], '{:.0f}')} (bare "
            f"{span([x['cpu_us'] for x in bare], '{:.0f}')}); rate × bare {span(rate, '{:.3f}')}"
        )
    print(f"load after: {load_avg()}")


if __name__ == "__main__":
    main()
