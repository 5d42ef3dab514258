"""The run's last writer work, two transactions against one (issue 11, the 200 ms tail).

    python tests/bench/bench_run_end.py [--rows 300] [--rounds 20]

The writer process's end as the run's tail pays it, in this process on a real DuckDB file
(no network): a last segment of `--rows` answered records (result + attempt rows; ~0.25 s of
a 1,200 rec/s run, `TAIL_FLUSH_S`) then the run's row closed and the job's statuses counted.
"two": `write_segments` then `end_run`, each its own transaction (b5d2829); "one":
`end_run(last=...)`, both in one (stop 24). The two alternate round by round on the same
file, which grows by `--rows` records a round. Printed: the median and range of CPU and wall
milliseconds of each; CPU is what a quiet machine's tail waits for, wall what this one did.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from batchroute.journal import Journal
from batchroute.store import ResultStore
from batchroute.types import (
    AttemptOutcome,
    AttemptRow,
    CostSource,
    RecordStatus,
    ResultRow,
    RunCounts,
    RunStatus,
)
from batchroute.writer import _cost_fixes

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def segment(db: Path, first: int, n: int) -> Path:
    j = Journal(db)
    j.open()
    for i in range(first, first + n):
        key = f"r{i:07d}"
        j.append(
            AttemptRow(
                "r1",
                "t",
                key,
                1,
                "mid",
                "openai/gpt-4o-mini",
                NOW,
                20,
                200,
                AttemptOutcome.OK,
                None,
                None,
                Decimal("0.000123"),
                CostSource.OPENROUTER,
                f"gen-{i}",
                Decimal("0.01"),
            )
        )
        j.append(
            ResultRow(
                "t",
                key,
                "r1",
                i,
                RecordStatus.DONE,
                created_at=NOW,
                tier="mid",
                cost_usd=Decimal("0.000123"),
                output="Une phrase traduite. " * 3,
            )
        )
    seg = j.rotate_segment()
    j.close()
    assert seg is not None
    return seg


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=20)
    a = ap.parse_args()
    print(f"load before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as d:
        db = Path(d) / "results.duckdb"
        ResultStore(db).begin_run("r1", "t", "job.yaml", NOW, "bench", migrate=True)
        store = ResultStore(db, keep_instance=True)
        counts = RunCounts(seen=1, done=1)
        got: dict[str, list[tuple[float, float]]] = {"two": [], "one": []}
        at = 0
        for rnd in range(a.rounds):
            for kind in ("two", "one") if rnd % 2 == 0 else ("one", "two"):
                seg = segment(db, at, a.rows)
                at += a.rows
                c, t = time.process_time(), time.perf_counter()
                if kind == "two":
                    assert store.write_segments([seg], _cost_fixes)
                    store.end_run("r1", RunStatus.COMPLETED, counts, NOW, "t", NOW.date())
                else:
                    ended = store.end_run(
                        "r1", RunStatus.COMPLETED, counts, NOW, "t", NOW.date(),
                        last=([seg], _cost_fixes),
                    )  # fmt: skip
                    assert ended is not None
                got[kind].append(((time.process_time() - c) * 1e3, (time.perf_counter() - t) * 1e3))
                seg.unlink()
    for kind, xs in got.items():
        cpu, wall = [x[0] for x in xs], [x[1] for x in xs]
        print(
            f"{kind}: CPU ms median {statistics.median(cpu):.1f} ({min(cpu):.1f}-{max(cpu):.1f}), "
            f"wall ms median {statistics.median(wall):.1f} ({min(wall):.1f}-{max(wall):.1f})"
        )
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
