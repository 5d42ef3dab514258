"""The writer process's CPU per record vs how many segments go in one transaction (issue 11).

Run on demand:
    .venv/bin/python tests/bench/bench_writer.py [--records 20000] [--flush-s 1] [--groups 1,5]
        [--repeat 3]

First one real run at 0 ms against a fresh simulator (concurrency 128) whose journal segments
are kept (hard links, taken before the writer process deletes them); `--flush-s` sets the
run's hand-over interval (`book.FLUSH_EVERY_S`; 1 s as before issue 11's "Commit interval",
5 s since). Then those same segments are applied to a fresh database with the writer process's
own path (`ResultStore(keep_instance=True).write_segments`), `group` segments per transaction,
in this process, and the CPU time of that is reported per result row: the same rows, the same
code, only the number of transactions differs. The process's start-up (~0.16 s of CPU: the
interpreter and DuckDB) is not in these figures.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from _harness import load_avg, run_batchroute, simulator, write_job

from batchroute.runner import book, sink
from batchroute.store import ResultStore
from batchroute.writer import _cost_fixes


def capture(n: int, flush_s: float, keep: Path) -> int:
    """One run of `n` records; every segment it hands over is hard-linked into `keep`."""
    book.FLUSH_EVERY_S = flush_s  # read by each Book as it is made
    handed = sink.WriterProcess.apply

    def apply(self: sink.WriterProcess, segment: Path) -> None:
        os.link(segment, keep / segment.name)
        handed(self, segment)

    sink.WriterProcess.apply = apply  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory() as d, simulator() as sim:
        tmp = Path(d)
        job = write_job(tmp, n, concurrency=128, requests_per_minute=None)
        _, rep = run_batchroute(job, sim.url, tmp / "run.duckdb")
    sink.WriterProcess.apply = handed  # type: ignore[method-assign]
    return int(rep.counts.done)


def apply_all(segments: list[Path], group: int) -> tuple[int, int, float]:
    """(result rows, transactions, CPU seconds) of committing `segments`, `group` at a time."""
    with tempfile.TemporaryDirectory() as d:
        db = Path(d) / "w.duckdb"
        ResultStore(db).migrate()
        copies = []
        for s in segments:
            copies.append(Path(shutil.copy(s, Path(d) / s.name)))
        rows = sum(1 for c in copies for line in c.open("rb") if line.startswith(b"r"))
        store = ResultStore(db, write_timeout=60, keep_instance=True)
        c0 = time.process_time()
        for i in range(0, len(copies), group):
            if not store.write_segments(copies[i : i + group], _cost_fixes):
                raise SystemExit("a segment needs the row path: not this benchmark's case")
        return rows, -(-len(copies) // group), time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=20_000)
    ap.add_argument("--flush-s", type=float, default=1.0, help="the run's hand-over interval")
    ap.add_argument("--groups", default="1,5", help="segments per transaction, comma-separated")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    groups = [int(g) for g in a.groups.split(",")]
    with tempfile.TemporaryDirectory() as d:
        keep = Path(d)
        done = capture(a.records, a.flush_s, keep)
        segments = sorted(keep.iterdir())
        print(f"captured {len(segments)} segments of a {done:,}-record run at 0 ms "
              f"(hand-over every {a.flush_s:g} s); load {load_avg()}")  # fmt: skip
        for rnd in range(a.repeat):
            for g in groups:
                rows, tx, cpu = apply_all(segments, g)
                print(
                    f"[{rnd + 1}] {g} segment(s) per transaction: {tx} transactions, "
                    f"{cpu:.2f} s CPU = {cpu * 1e6 / rows:.1f} µs per result row; "
                    f"load {load_avg()}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
