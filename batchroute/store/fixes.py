"""Reconciliation writes: attempts still booked at their reservation, and their real costs.

SQL over an open connection; asking the provider for the bill is the runner's job, not this.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

import duckdb

from ..types import CostFix, CostSource, ReservedAttempt, RunStatus
from .columns import MONEY
from .encode import money


def reserved_attempts(
    con: duckdb.DuckDBPyConnection, job_name: str, limit: int
) -> list[ReservedAttempt]:
    """This job's attempts booked at their reservation, or priced from their tokens at /models
    prices (the serving endpoint may bill more, audit4), that have a generation id, newest
    first."""
    rows = con.execute(
        "SELECT run_id, job_name, record_key, attempt_no, generation_id, cost_usd "
        "FROM attempts WHERE job_name = ? AND cost_source IN (?, ?) "
        "AND generation_id IS NOT NULL ORDER BY started_at DESC LIMIT ?",
        [job_name, str(CostSource.RESERVED), str(CostSource.CATALOG), limit],
    ).fetchall()
    return [ReservedAttempt(r[0], r[1], r[2], int(r[3]), r[4], Decimal(r[5])) for r in rows]


def apply_fixes(con: duckdb.DuckDBPyConnection, fixes: Sequence[CostFix]) -> int:
    """Fix reserved or catalog-priced attempts (only while still so: a fix applies once), then
    make the affected records' cost the sum of their attempts again; returns how many changed.

    A fix hits only the row of its own generation id: (run, record, attempt_no) may be shared
    (a batch item and its round-2 resubmission are both attempt 0 of one run), and the other
    row's reservation stands for a bill /generation did not measure."""
    changed = 0
    recompute: set[tuple[str, str]] = set()
    runs: set[str] = set()
    for f in fixes:
        rows = con.execute(
            f"UPDATE attempts SET cost_usd = CAST(? AS {MONEY}), cost_source = ?, "
            f"usage_cost_usd = CAST(? AS {MONEY}), upstream_cost_usd = CAST(? AS {MONEY}) "
            "WHERE run_id = ? AND job_name = ? AND record_key = ? AND attempt_no = ? "
            "AND cost_source IN (?, ?) AND generation_id = ? RETURNING 1",
            [
                money(f.cost_usd),
                f.cost_source,
                None if f.usage_cost_usd is None else money(f.usage_cost_usd),
                None if f.upstream_cost_usd is None else money(f.upstream_cost_usd),
                f.run_id,
                f.job_name,
                f.record_key,
                f.attempt_no,
                str(CostSource.RESERVED),
                str(CostSource.CATALOG),  # tokens at /models prices: the bill may differ
                f.generation_id,
            ],
        ).fetchall()
        changed += len(rows)
        if rows:
            runs.add(f.run_id)
        if rows and f.recompute_result:
            recompute.add((f.job_name, f.record_key))
    for job_name, key in recompute:
        con.execute(
            "UPDATE results SET cost_usd = (SELECT COALESCE(SUM(a.cost_usd), 0) FROM attempts a "
            "WHERE a.job_name = results.job_name AND a.record_key = results.record_key) "
            "WHERE job_name = ? AND record_key = ?",
            [job_name, key],
        )
    # A finished run's cost is the sum of its attempts: a fix that comes after its end (the
    # next run's reconciliation) moves it too. A run still going writes its cost at its end,
    # fixes included (`finish_run`): asked first, so that the writer process's fixes of its
    # own run sum no attempts.
    ended = (
        con.execute(
            "SELECT run_id FROM runs WHERE list_contains(?::VARCHAR[], run_id) AND status <> ?",
            [sorted(runs), str(RunStatus.RUNNING)],
        ).fetchall()
        if runs
        else []
    )
    for (run_id,) in ended:
        con.execute(
            "UPDATE runs SET cost_usd = (SELECT COALESCE(SUM(a.cost_usd), 0) FROM attempts a "
            "WHERE a.run_id = ?) WHERE run_id = ?",
            [run_id, run_id],
        )
    return changed
