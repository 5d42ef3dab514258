"""Store benchmark (on demand): bulk write vs row-by-row executemany, per-flush cost, final_keys.

Run: /work/venv/bin/python tests/bench/bench_store.py [--keys 200000]
Ratios inside one run matter; absolute numbers drift with the machine's load.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb

from batchroute.store import ResultStore
from batchroute.store.columns import ATTEMPT_COLUMNS as _ATTEMPT_COLS
from batchroute.store.columns import RESULT_COLUMNS as _RESULT_COLS
from batchroute.store.columns import TABLE_COLUMNS as _COLS
from batchroute.store.encode import SQL as _SQL
from batchroute.store.encode import column_values as _column
from batchroute.types import AttemptOutcome, AttemptRow, RecordStatus, ResultRow

T0 = datetime(2026, 11, 3, tzinfo=UTC)
OUTPUT = "Das ist eine übersetzte Antwort mit 'Anführungszeichen' und \"quotes\". " * 4


def results(n: int, start: int = 0, job: str = "bench") -> list[ResultRow]:
    return [
        ResultRow(
            job_name=job,
            record_key=f"rec-{i:08d}",
            run_id="run-1",
            line_no=i,
            status=RecordStatus.DONE,
            task_type="translation",
            complexity="medium",
            tier="mid",
            classifier="heuristic",
            model_requested="openai/gpt-4o-mini",
            model_served="openai/gpt-4o-mini",
            provider="OpenAI",
            output=OUTPUT,
            finish_reason="stop",
            prompt_tokens=120,
            completion_tokens=80,
            cost_usd=Decimal("0.000001148945") * (i % 97 + 1),
            cost_source="openrouter",
            latency_ms=420,
            attempts=1,
            generation_id=f"gen-{i}",
            request_fp=f"{i:064x}",
            created_at=T0 + timedelta(milliseconds=i),
        )
        for i in range(start, start + n)
    ]


def attempts(n: int, start: int = 0, job: str = "bench") -> list[AttemptRow]:
    return [
        AttemptRow(
            run_id="run-1",
            job_name=job,
            record_key=f"rec-{i:08d}",
            attempt_no=1,
            tier="mid",
            model="openai/gpt-4o-mini",
            started_at=T0 + timedelta(milliseconds=i),
            latency_ms=420,
            http_status=200,
            outcome=AttemptOutcome.OK,
            cost_usd=Decimal("0.000001148945") * (i % 97 + 1),
            cost_source="openrouter",
            generation_id=f"gen-{i}",
        )
        for i in range(start, start + n)
    ]


def baseline_executemany(store: ResultStore, n: int) -> float:
    """Rows/s of a plain row-by-row executemany (results + attempts), one transaction."""
    res, att = results(n, start=10**7), attempts(n, start=10**7)
    now = datetime(2026, 1, 1)
    rcols = [_column(res, c, t, now) for c, t in _RESULT_COLS]
    acols = [_column(att, c, t, now) for c, t in _ATTEMPT_COLS]
    rrows, arows = list(zip(*rcols, strict=True)), list(zip(*acols, strict=True))
    rq = ", ".join("?" for _ in _RESULT_COLS)
    aq = ", ".join("?" for _ in _ATTEMPT_COLS)
    rnames = ", ".join(c for c, _ in _RESULT_COLS)
    anames = ", ".join(c for c, _ in _ATTEMPT_COLS)
    with duckdb.connect(str(store.path)) as con:
        t = time.perf_counter()
        con.execute("BEGIN")
        con.executemany(f"INSERT INTO results ({rnames}) VALUES ({rq})", rrows)
        con.executemany(f"INSERT INTO attempts ({anames}) VALUES ({aq})", arows)
        con.execute("COMMIT")
        dt = time.perf_counter() - t
        con.execute("DELETE FROM results WHERE record_key >= 'rec-10000000'")
        con.execute("DELETE FROM attempts WHERE record_key >= 'rec-10000000'")
    return 2 * n / dt


def alt_list_params(store: ResultStore, n: int) -> float:
    """Rows/s of the runner-up: one list parameter per column + unnest (no temp file)."""
    res, att = results(n, start=2 * 10**7), attempts(n, start=2 * 10**7)
    now = datetime(2026, 1, 1)
    t = time.perf_counter()
    with duckdb.connect(str(store.path)) as con:
        con.execute("BEGIN")
        for table, rows in (("results", res), ("attempts", att)):
            params = [_column(rows, c, ty, now) for c, ty in _COLS[table]]
            con.execute(_SQL[(table, False)], params)
        con.execute("COMMIT")
        dt = time.perf_counter() - t
        con.execute("DELETE FROM results WHERE record_key >= 'rec-20000000'")
        con.execute("DELETE FROM attempts WHERE record_key >= 'rec-20000000'")
    return 2 * n / dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", type=int, default=200_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = ResultStore(Path(tmp) / "bench.duckdb")
        store.migrate()
        base = baseline_executemany(store, 500)
        print(f"baseline executemany (row by row): {base:,.0f} rows/s")
        written = 0
        for batch in (2_000, 5_000, 10_000):
            res, att = results(batch, start=written), attempts(batch, start=written)
            t = time.perf_counter()
            store.write(res, att)
            dt = time.perf_counter() - t
            written += batch
            rate = 2 * batch / dt
            print(
                f"bulk write {batch:>6} results + {batch:>6} attempts incl. open/close: "
                f"{dt * 1000:7.1f} ms = {rate:,.0f} rows/s ({rate / base:.0f}x baseline)"
            )
        res = results(5_000, start=0)  # existing keys: the upsert/accumulate path
        t = time.perf_counter()
        store.write(res, attempts(5_000, start=0))
        dt = time.perf_counter() - t
        print(f"bulk upsert of 5000 existing results + 5000 attempts: {dt * 1000:.1f} ms = "
              f"{10_000 / dt:,.0f} rows/s")  # fmt: skip
        alt = alt_list_params(store, 5_000)
        print(f"alternative: list parameters + unnest, 5000+5000: {alt:,.0f} rows/s")
        # fill to --keys results, then time per-flush costs and final_keys
        while written < args.keys:
            n = min(20_000, args.keys - written)
            store.write(results(n, start=written), attempts(n, start=written))
            written += n
        t = time.perf_counter()
        for _ in range(10):
            duckdb.connect(str(store.path)).close()
        print(f"open+close only, db with {written:,} results: "
              f"{(time.perf_counter() - t) * 100:.1f} ms")  # fmt: skip
        small = 0.0
        for i in range(10):
            r = results(50, start=written + i * 50)
            t = time.perf_counter()
            store.write(r, attempts(50, start=written + i * 50))
            small += time.perf_counter() - t
        print(f"open+write 50+50 rows+close (a quiet second's flush): {small * 100:.1f} ms")
        t = time.perf_counter()
        keys = store.final_keys("bench", statuses={RecordStatus.DONE})
        print(f"final_keys over {len(keys):,} results: {(time.perf_counter() - t) * 1000:.0f} ms")
        size = store.path.stat().st_size / 1e6
        print(f"database size: {size:.0f} MB")


if __name__ == "__main__":
    main()
