"""The run's own work per record in CPU instructions, which the machine's load does not change
(issue 11, diagnostic; needs valgrind).

    python tests/bench/own_instructions.py before=/tmp/main-copy after=. [--sizes 3000,7000]

On this shared 2-core machine a CPU-time figure moves ±20 % with the others' load; an
instruction count does not. Each tree's `batchroute run` (store, journal, writer process and
progress on, 0 ms) runs under `valgrind --tool=cachegrind` with the HTTP call replaced by the
simulator's own answer, canned: `OpenRouterClient.complete` encodes the body, yields to the loop
once, scrubs and parses the canned answer, so what is counted is everything the run's process
does for a record except aiohttp's request and response. Two input sizes; the difference of
their instruction counts over the difference of their records is the per-record figure (the
interpreter's start, imports and the run's fixed start and end cancel out). The writer process
is counted apart (valgrind follows it, exec'd or forked: `--trace-children=yes`): its total
instructions are printed beside the run's, start-up included, since a writer's start (a fresh
interpreter and `import duckdb`, or a fork, issue 11) is the same for both sizes. Instructions
only: the kernel's work (a fork's page copies) is not in them, so `compare_trees.py`'s CPU
figure is the one for the writer's whole cost.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

from _harness import MODEL, PY, simulator, write_job

CHILD = r"""
import asyncio, sys
from pathlib import Path
sys.path.insert(0, TREE + "/tests/bench")
import orjson
from multidict import CIMultiDict
import batchroute.runner, batchroute.spec
from batchroute.client import session
from batchroute.client.parse import parse_completion
from batchroute.errors import scrub
from _harness import run_batchroute
HEADERS = CIMultiDict({"X-Generation-Id": GEN_ID, "Content-Type": "application/json"})

async def complete(self, payload, *, stream=False, idle_timeout_s=None, stream_max_s=None,
                   seen=None):
    orjson.dumps(payload)
    await asyncio.sleep(0)
    return parse_completion(scrub(BODY), 200, HEADERS, model=payload["model"])

session.OpenRouterClient.complete = complete
s, rep = run_batchroute(Path(JOB), URL, Path(DB))
assert rep.counts.done == N, rep.counts
"""


def canned(url: str) -> tuple[bytes, str]:
    """One answer of the simulator to a request like the bench's."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Translate: a b c"}]}
    req = urllib.request.Request(
        url + "/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Authorization": "Bearer sk-bench", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req) as resp:
        return resp.read(), resp.headers.get("X-Generation-Id", "gen-1")


def instructions(
    tree: Path, job: Path, url: str, n: int, db: Path, answer: tuple[bytes, str]
) -> tuple[int, int]:
    """(the run's process, its writer process): instructions of each, from valgrind's
    summary (`I refs`), one log file per process (`--log-file=…/%p`: an exec'd writer's own
    stderr is a pipe to the run, so its summary would not reach ours)."""
    head = f"TREE={str(tree)!r}; JOB={str(job)!r}; URL={url!r}; DB={str(db)!r}; N={n}\n"
    head += f"BODY={answer[0]!r}; GEN_ID={answer[1]!r}\n"
    script = db.with_suffix(".py")
    script.write_text(head + CHILD)
    logs = db.with_suffix(".vg")
    logs.mkdir()
    cmd = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null"]
    cmd += ["--trace-children=yes", f"--log-file={logs}/%p"]
    with subprocess.Popen(
        [*cmd, PY, str(script)],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(tree)},
    ) as proc:
        _, err = proc.communicate()
    refs: dict[int, int] = {}
    for log in logs.iterdir():
        m = re.search(r"I\s+refs:\s+([\d,]+)", log.read_text(errors="replace"))
        if m is not None:
            refs[int(log.name)] = int(m.group(1).replace(",", ""))
    if proc.returncode != 0 or proc.pid not in refs:
        raise SystemExit(f"{tree}: failed\n{err[-2000:]}")
    return refs[proc.pid], sum(v for k, v in refs.items() if k != proc.pid)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("trees", nargs="+", help="label=path of a source tree")
    # Both above the run's head (`runner.early.HEAD_LINES`, 2,048): past it a run opens the
    # pass behind the head (two DuckDB connections and their queries, ~0.17 G instructions),
    # which a size below it does not: 2000,6000 counted that fixed start as ~40k "a record".
    ap.add_argument("--sizes", default="3000,7000", help="two input sizes, both above 2,048")
    a = ap.parse_args()
    n1, n2 = (int(x) for x in a.sizes.split(","))
    trees = {k: Path(v).resolve() for k, v in (t.split("=", 1) for t in a.trees)}
    counts: dict[tuple[str, int], int] = {}
    writer: dict[tuple[str, int], int] = {}
    with tempfile.TemporaryDirectory() as d, simulator() as sim:
        tmp = Path(d)
        answer = canned(sim.url)
        for n in (n1, n2):
            (tmp / str(n)).mkdir()
            job = write_job(tmp / str(n), n, concurrency=128, requests_per_minute=None)
            for label, tree in trees.items():
                db = tmp / str(n) / f"{label}.duckdb"
                counts[label, n], writer[label, n] = instructions(tree, job, sim.url, n, db, answer)
                print(
                    f"{label}, {n:,} records: {counts[label, n]:,} instructions "
                    f"(its writer process: {writer[label, n]:,})",
                    flush=True,
                )
    for label in trees:
        per = (counts[label, n2] - counts[label, n1]) / (n2 - n1)
        fixed = counts[label, n1] - n1 * per
        print(f"{label}: {per:,.0f} instructions per record (fixed {fixed / 1e9:.2f} G)")
        w_per = (writer[label, n2] - writer[label, n1]) / (n2 - n1)
        w_fixed = writer[label, n1] - n1 * w_per
        print(f"{label}: writer process {w_per:,.0f} per record (fixed {w_fixed / 1e9:.2f} G)")


if __name__ == "__main__":
    sys.exit(main())
