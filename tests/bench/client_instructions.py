"""The whole client's work per record in CPU instructions, ours against the bare loop's
(issue 11; needs valgrind). The machine's load does not change an instruction count.

    python tests/bench/client_instructions.py [before=/tmp/b5d2829] after=. [--sizes 3000,7000]

Each side runs under `valgrind --tool=cachegrind --trace-children=yes` against the real
simulator (`batchroute simulate`, 0 ms, concurrency 128), which runs natively in its own
process (a fresh one for every measurement):

- ours: the tree's `batchroute run` as `compare_trees.py` and `python -m tests.bench` run it
  (`tests/bench/_harness.run_batchroute` in a fresh interpreter: the runner the CLI calls,
  store, journal and progress on); counted: the run's process and its writer process (forked
  or exec'd: valgrind follows both, one log per pid), aiohttp, asyncio and DuckDB included;
- bare: this tree's `tests/bench/_worker.py` bare loop (`bench_throughput.bare_loop`, its
  bodies read and rendered from the same input file as it goes), as `python -m tests.bench`
  and `compare_trees.py` measure it.

The run's time-driven work is stretched `--stretch` times (default 1,000: the commit every
5 s, the tail's every 0.25 s, the journal's group sync every 100 ms): under valgrind a run
takes ~50-200x its native time, so those would come that much more often per record than
natively, and as often as the machine's load makes the run slow: the first version of this
tool, without it, counted the writer at 148k instructions a record at load 3 and 464k at
load 16. Stretched, they happen a fixed number of times (the run's start and end) and cancel
with the two sizes; natively they cost ~1-2 µs a record (a commit's ~25 ms per 5 s).

Two input sizes; (instructions at n2 − at n1) / (n2 − n1) is the per-record figure: the
interpreter's start, imports and each side's fixed start and end cancel. Printed per tree:
ours, the bare loop's, their ratio, and the writer process's share of ours.

What it leaves out, against `compare_trees.py`'s CPU-time figure: the kernel's work (system
calls, a fork's page copies, socket buffers: a bigger part of the bare loop's CPU than of
ours) and the cost of an instruction (cache misses, a forked writer's copy-on-write faults),
and it runs each side ~50× slower than native, so the loop's batching differs (fewer answers
ready per loop step). It is the figure to compare across times of day; the CPU-time ratio is
the one the issue's target is stated in (docs/benchmarks.md, "Stop 24, cpu5a", says how they
relate). `PYTHONHASHSEED=0` for every side: the same count run after run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _harness import PY, ROOT, load_avg, simulator, write_job

OURS = r"""
import sys
from pathlib import Path
sys.path.insert(0, TREE + "/tests/bench")
import batchroute.runner, batchroute.spec  # imported before the run, as the CLI has them
from batchroute import journal
from batchroute.runner import book
# Time-driven work, stretched: under valgrind (~50x slower) a commit every 5 s or a journal
# sync every 100 ms would come 50x as often per record as natively, and with the machine's
# load: then the count would move with the load again.
book.FLUSH_EVERY_S *= STRETCH
book.TAIL_FLUSH_S *= STRETCH
journal.SYNC_EVERY_S *= STRETCH
from _harness import run_batchroute
s, rep = run_batchroute(Path(JOB), URL, Path(DB))
assert rep.counts.done == N and rep.counts.failed == 0, rep.counts
"""
VALGRIND = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null"]


def refs(logs: Path) -> dict[int, int]:
    """Instructions (`I refs`) of every process valgrind logged in `logs`, by pid."""
    out: dict[int, int] = {}
    for log in logs.iterdir():
        m = re.search(r"I\s+refs:\s+([\d,]+)", log.read_text(errors="replace"))
        if m is not None:
            out[int(log.name)] = int(m.group(1).replace(",", ""))
    return out


def measure(
    tree: Path | None, tmp: Path, n: int, conc: int, tag: str, stretch: float
) -> tuple[int, int]:
    """(all of the side's instructions, those of its child processes): one fresh simulator,
    one run of `tree`'s batchroute (or the bare loop when tree is None) under valgrind."""
    work = tmp / tag
    work.mkdir()
    logs = work / "vg"
    logs.mkdir()
    # timeout_s: under valgrind a call of 128 in flight takes seconds of the client's time
    job = write_job(work, n, concurrency=conc, requests_per_minute=None, timeout_s=600)
    env = {**os.environ, "PYTHONPATH": str(tree or ROOT), "PYTHONHASHSEED": "0"}
    with simulator() as sim:
        if tree is None:
            spec = {"kind": "bare", "job": str(job), "url": sim.url, "records": n}
            spec |= {"concurrency": conc, "loop": "asyncio"}
            (work / "spec.json").write_text(json.dumps(spec))
            argv = [PY, str(ROOT / "tests/bench/_worker.py"), str(work / "spec.json")]
            argv.append(str(work / "out.json"))
            cwd = ROOT
        else:
            script = work / "ours.py"
            head = f"TREE={str(tree)!r}; JOB={str(job)!r}; URL={sim.url!r}; N={n}\n"
            head += f"DB={str(work / 'r.duckdb')!r}; STRETCH={stretch!r}\n"
            script.write_text(head + OURS)
            argv = [PY, str(script)]
            cwd = tree
        cmd = [*VALGRIND, "--trace-children=yes", f"--log-file={logs}/%p", *argv]
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        out = proc.stdout[-2000:] + proc.stderr[-2000:]
        raise SystemExit(f"{tag}: exit {proc.returncode}\n{out}")
    if tree is None:
        done = json.loads((work / "out.json").read_text())["done"]
        if done != n:
            raise SystemExit(f"{tag}: the bare loop finished {done} of {n}")
    counts = refs(logs)
    first = min(counts)  # the side's own process was started first: the lowest pid
    return sum(counts.values()), sum(v for k, v in counts.items() if k != first)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("trees", nargs="+", help="label=path of a source tree")
    # Both above the run's head (`runner.early.HEAD_LINES`, 2,048): past it a run opens the
    # pass behind the head (two DuckDB connections and their queries, ~0.17 G instructions),
    # which a size below it does not: 2000,6000 counted that fixed start as ~40k "a record".
    ap.add_argument("--sizes", default="3000,7000", help="two input sizes, both above 2,048")
    ap.add_argument("--concurrency", type=int, default=128)
    ap.add_argument(
        "--stretch", type=float, default=1000.0, help="× the run's time-driven intervals"
    )
    a = ap.parse_args()
    n1, n2 = (int(x) for x in a.sizes.split(","))
    trees: dict[str, Path | None] = {"bare": None}
    trees |= {k: Path(v).resolve() for k, v in (t.split("=", 1) for t in a.trees)}
    total: dict[tuple[str, int], int] = {}
    kids: dict[tuple[str, int], int] = {}
    print(f"load before: {load_avg()}", flush=True)
    with tempfile.TemporaryDirectory() as d:
        for n in (n1, n2):
            for label, tree in trees.items():
                t0 = time.monotonic()
                tag = f"{label}-{n}"
                total[label, n], kids[label, n] = measure(
                    tree, Path(d), n, a.concurrency, tag, a.stretch
                )
                print(
                    f"{label}, {n:,} records: {total[label, n]:,} instructions (child "
                    f"processes: {kids[label, n]:,}; {time.monotonic() - t0:.0f} s)",
                    flush=True,
                )
    per = {k: (total[k, n2] - total[k, n1]) / (n2 - n1) for k in trees}
    print(f"bare loop: {per['bare']:,.0f} instructions per record")
    for label in list(trees)[1:]:
        w = (kids[label, n2] - kids[label, n1]) / (n2 - n1)
        print(
            f"{label}: {per[label]:,.0f} instructions per record = {per[label] / per['bare']:.2f}× "
            f"the bare loop's (writer process {w:,.0f}; the run's process "
            f"{(per[label] - w) / per['bare']:.2f}× bare)"
        )
    print(f"load after: {load_avg()}")


if __name__ == "__main__":
    sys.exit(main())
