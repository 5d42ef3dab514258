"""CPU of starting the writer process, forked vs exec'd (issue 11; run on demand).

    .venv/bin/python tests/bench/writer_start.py [--rounds 10]

In this process, with the modules a run has loaded (`batchroute.runner`, as the CLI and
`_worker.py` have them), start a `WriterProcess` for a migrated database, tell it `quit` and
wait for its end: forked (`runner/fork.py`) and exec'd (`python -m batchroute.writer`, the
way before), alternating. Printed: the child's CPU (reaped: RUSAGE_CHILDREN) and this
process's own (the fork, the pipes, the copy-on-write faults while the child lives), median and
range in ms. CPU seconds, not wall time: the machine's load moves them less. Not in it: the
DuckDB instance, made at the writer's first transaction (~20 ms) either way.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import tempfile
from pathlib import Path

from _harness import load_avg

import batchroute.runner  # noqa: F401 - loaded, as a run's process has it
from batchroute.runner import fork, sink
from batchroute.store import ResultStore


async def _no_fork(argv: list[str]) -> None:
    return None


def _span(xs: list[float]) -> str:
    return f"{statistics.median(xs):.1f} ms ({min(xs):.1f}-{max(xs):.1f})"


def _cpu(r: resource.struct_rusage) -> float:
    return r.ru_utime + r.ru_stime


async def one(db: Path, forked: bool) -> tuple[float, float]:
    """(this process's CPU, the writer's CPU), seconds, of one start and `quit`."""
    sink.fork_writer = fork.fork_writer if forked else _no_fork  # type: ignore[attr-defined]
    me, kids = resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN
    s0, c0 = _cpu(resource.getrusage(me)), _cpu(resource.getrusage(kids))
    w = sink.WriterProcess(db, 5.0)
    await w.start()
    w.quit()
    if await w.reply() is not None:
        raise SystemExit("the writer did not answer quit with bye")
    await w.wait()
    return _cpu(resource.getrusage(me)) - s0, _cpu(resource.getrusage(kids)) - c0


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=10)
    a = ap.parse_args()
    if not fork.can_fork():
        raise SystemExit("this process cannot fork its writer (another thread runs)")
    print(f"load {load_avg()}")
    got: dict[str, list[tuple[float, float]]] = {"forked": [], "exec'd": []}
    with tempfile.TemporaryDirectory() as d:
        db = Path(d) / "w.duckdb"
        ResultStore(db).migrate()
        for i in range(a.rounds):
            for forked in (True, False) if i % 2 else (False, True):
                got["forked" if forked else "exec'd"].append(await one(db, forked))
    for label, xs in got.items():
        own, child = [x[0] * 1e3 for x in xs], [x[1] * 1e3 for x in xs]
        print(f"{label}: writer {_span(child)}, the run's process {_span(own)}")
    print(f"load {load_avg()}")


if __name__ == "__main__":
    asyncio.run(main())
