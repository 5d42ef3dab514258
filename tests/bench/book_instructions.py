"""The recording side's instructions per record, tree against tree (issue 11; needs valgrind).

    python tests/bench/book_instructions.py before=/tmp/main-copy after=. [--records 5000]
        [--part all]

`own_instructions.py` counts a whole canned run (~10 minutes for two trees on a loaded
machine, and its writer figure moves with how many 5-second segments a slow run makes); this
counts only what a run's process does to book one answered record, in a minute or two: each
tree's `Book` journals `--records` calls the way the run does (`sending`, `seen`, `landed`,
the progress's `routed`, then `done`: an in-flight line, the attempt and the result lines,
one write() every 100 records from the event loop, the syncer thread's group commits) under
`valgrind --tool=cachegrind`, once with 0 records and once with `--records`; the difference
over the records is the figure. The row is the bench's own: a simulator answer's fields, with
GC thresholds as `runner/setup.py` sets them for a run. `--part` counts one piece instead:
`sending` (with `seen` and `landed`), `routed`, `done`, `attempt` (`Book.attempt` alone).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from _harness import PY

CHILD = r"""
import asyncio, gc, sys, tempfile
from decimal import Decimal
from pathlib import Path
from batchroute.journal import Journal
from batchroute.progress import Progress
from batchroute.runner.book import Book
from batchroute.runner.work import Call, Trail, WorkItem, utcnow
from batchroute.types import AttemptOutcome, Classification, Completion, CostSource, Record, Usage

PART, N = sys.argv[1], int(sys.argv[2])
gc.set_threshold(20_000, 20, 20)  # as runner/setup.py sets it for a run
MODEL = "openai/gpt-4o-mini"
TEXT = "[sim openai/gpt-4o-mini] " + "lorem ipsum dolor sit amet " * 9
ITEM = WorkItem(Record(7, "r0000007", {"text": "x"}, line_fp=-1706253303028239928), [],
                "2585ed2d3c1a0014", Classification("translation", "medium", "job.task"), "mid",
                False, 10)
USAGE = Usage(8, 68, Decimal("0.000042000000"))
ANSWER = Completion(TEXT, "stop", "stop", MODEL, "OpenAI", "gen-1796671079-a6hmjbLgoYHg2aLZ", USAGE)
RESERVED = Decimal("0.000177345000")
CALL = Call(MODEL, utcnow(), 16, Decimal("0.000042000000"), CostSource.OPENROUTER,
            completion=ANSWER, reserved=RESERVED, listed=RESERVED)
FLIGHT = PART == "all" and hasattr(CALL, "flight")  # a tree whose attempt line reuses it


async def main() -> None:
    journal = Journal(Path(tempfile.mkdtemp()) / "bench.duckdb")
    journal.open()
    book = Book(None, journal, run_id="e74e0b211fcf431d", job_name="bench", now=utcnow)
    book.progress = Progress(["low", "mid", "high"], bars=False, quiet=True)
    progress, started = book.progress, utcnow()
    for i in range(N):
        if PART in ("all", "sending"):
            token = book.sending(ITEM, "mid", 1, MODEL, started, RESERVED, RESERVED)
            book.seen(token)
            if FLIGHT:  # as the run's `Sender` does: the attempt line reuses it (cpu6a)
                CALL.flight = book.flight(token)
            book.landed(token)
        if PART in ("all", "routed"):
            progress.routed("mid")
        if PART in ("all", "done"):
            book.done(ITEM, "mid", Trail(attempts=1, cost=CALL.cost), CALL)
        if PART == "attempt":
            book.attempt(ITEM, "mid", 1, CALL, AttemptOutcome.OK)
        if i % 100 == 99:
            await asyncio.sleep(0)  # the journal's write() for the step's rows
    await asyncio.sleep(0)
    journal.close()


asyncio.run(main())
"""


def instructions(tree: Path, part: str, n: int, tmp: Path) -> int:
    """Instructions of the child process (valgrind's `I refs`) for `n` records of `part`."""
    script, log = tmp / "child.py", tmp / f"vg-{tree.name}-{n}.log"
    script.write_text(CHILD)
    cmd = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null"]
    cmd += [f"--log-file={log}", PY, str(script), part, str(n)]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    m = re.search(r"I\s+refs:\s+([\d,]+)", log.read_text(errors="replace"))
    if proc.returncode != 0 or m is None:
        raise SystemExit(f"{tree}: failed\n{proc.stderr[-2000:]}")
    return int(m.group(1).replace(",", ""))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("trees", nargs="+", help="label=path of a source tree")
    ap.add_argument("--records", type=int, default=5000)
    ap.add_argument(
        "--part", default="all", choices=["all", "sending", "routed", "done", "attempt"]
    )
    a = ap.parse_args()
    trees = {k: Path(v).resolve() for k, v in (t.split("=", 1) for t in a.trees)}
    with tempfile.TemporaryDirectory() as d:
        for label, tree in trees.items():
            base = instructions(tree, a.part, 0, Path(d))
            full = instructions(tree, a.part, a.records, Path(d))
            print(f"{label}: {(full - base) / a.records:,.0f} instructions per record ({a.part})")


if __name__ == "__main__":
    sys.exit(main())
