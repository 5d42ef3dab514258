"""Idempotent writes of rows a killed run logged but may not have committed (journal replay).

Decides, row by row, which rows the database holds already. Reads no files: rows come in.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import duckdb

from ..types import AttemptOutcome, AttemptRow, RecordStatus, ResultRow
from .columns import MONEY
from .encode import bulk_write, dedupe, money, utc, write_results

ZERO = Decimal(0)


def write_missing(
    con: duckdb.DuckDBPyConnection,
    results: Sequence[ResultRow],
    attempts: Sequence[AttemptRow],
    now: datetime,
) -> int:
    """Write the rows (in log order) the database does not hold yet; returns how many
    records were written. Run inside one transaction, so a replay is all or nothing."""
    had_a = _attempts_written(con, attempts)
    had_r = _results_written(con, results)
    merged = dedupe([r for r, had in zip(results, had_r, strict=True) if not had])
    new_attempts = [a for a, had in zip(attempts, had_a, strict=True) if not had]
    if merged:
        write_results(con, merged, now)
    if new_attempts:
        bulk_write(con, "attempts", new_attempts, now)
        _book_killed(con, [a for a in new_attempts if a.outcome == AttemptOutcome.KILLED], now)
    return len(merged)


# A record's cost is the sum of all its attempts (design §4). A call killed in flight has only
# its attempt row (its record's row comes with its answer, which never came): its reservation
# is added to the record's row, a `pending` one if it has none yet, as every attempt's cost is
# (the status and answer of a row already there are kept). Else the next run's row for the
# record leaves it out and the results' books say less than the bill.
_BOOK_KILLED = f"""
INSERT INTO results (job_name, record_key, run_id, tier, status, cost_usd, attempts, created_at)
SELECT unnest($1::VARCHAR[]), unnest($2::VARCHAR[]), unnest($3::VARCHAR[]),
    unnest($4::VARCHAR[]), '{RecordStatus.PENDING}', CAST(unnest($5::VARCHAR[]) AS {MONEY}),
    unnest($6::INTEGER[]), CAST($7 AS TIMESTAMP)
ON CONFLICT (job_name, record_key) DO UPDATE SET cost_usd = results.cost_usd + excluded.cost_usd,
    attempts = results.attempts + excluded.attempts
"""


def _book_killed(
    con: duckdb.DuckDBPyConnection, killed: Sequence[AttemptRow], now: datetime
) -> None:
    """Add the reservations of `killed` attempts (new in the table) to their records' rows."""
    per: dict[tuple[str, str], tuple[str, str | None, Decimal, int]] = {}
    for a in killed:
        run_id, tier, cost, n = per.get((a.job_name, a.record_key), (a.run_id, a.tier, ZERO, 0))
        per[(a.job_name, a.record_key)] = (run_id, tier, cost + a.cost_usd, n + 1)
    if not per:
        return
    jobs, keys = zip(*per, strict=True)
    run_ids, tiers, costs, counts = zip(*per.values(), strict=True)
    con.execute(
        _BOOK_KILLED,
        [list(jobs), list(keys), list(run_ids), list(tiers), [money(c) for c in costs],
         list(counts), now.isoformat(sep=" ")],
    )  # fmt: skip


def _attempts_written(con: duckdb.DuckDBPyConnection, attempts: Sequence[AttemptRow]) -> list[bool]:
    """Which attempt rows (in log order) the database holds already.

    A row is there iff the same call is: (run, job, key, attempt number, start time) in
    `attempts`. The start time tells apart two calls of one key with the same attempt number
    in one run (an input that repeated an id, journaled by a version that sent both). Not the
    cost: reconciliation changes it after the commit. Should n rows of the log share all of
    that, the first k are there when k are in the table. A `killed` row (replayed for a call
    still in flight) is there iff any row of that attempt is: the call was answered and
    committed before the kill.
    """
    seen = [False] * len(attempts)
    if not attempts:
        return seen
    idents: dict[tuple[Any, ...], list[int]] = {}
    for i, a in enumerate(attempts):
        killed = a.outcome == AttemptOutcome.KILLED
        start = None if killed else utc(a.started_at).isoformat(sep=" ")
        key = (a.run_id, a.job_name, a.record_key, a.attempt_no, start)
        idents.setdefault(key, []).append(i)
    cols = list(zip(*idents, strict=True))
    found = con.execute(
        "WITH j AS (SELECT unnest($1::BIGINT[]) AS i, unnest($2::VARCHAR[]) AS run_id, "
        "unnest($3::VARCHAR[]) AS job_name, unnest($4::VARCHAR[]) AS record_key, "
        "unnest($5::INTEGER[]) AS attempt_no, "
        "CAST(unnest($6::VARCHAR[]) AS TIMESTAMP) AS started_at) "
        "SELECT j.i, count(*) FROM j JOIN attempts a ON a.run_id = j.run_id "
        "AND a.job_name = j.job_name AND a.record_key = j.record_key "
        "AND a.attempt_no = j.attempt_no "
        "AND (j.started_at IS NULL OR a.started_at = j.started_at) GROUP BY j.i",
        [list(range(len(idents))), *(list(c) for c in cols)],
    ).fetchall()
    rows = list(idents.values())
    for i, n in found:
        for k in rows[i][: int(n)]:
            seen[k] = True
    return seen


def _results_written(con: duckdb.DuckDBPyConnection, results: Sequence[ResultRow]) -> list[bool]:
    """Which result rows (in log order) the database holds already.

    The table holds one row per key, accumulated (cost, attempts, escalations add up over
    writes), whose other columns are those of the last write. Rows of one key are written in
    log order, so the log's rows for a key that are committed are a prefix of them, and the
    last committed one is the one that matches the table's row on (run, line, status,
    created_at): it and the rows before it are there, the rows after it are not. No match:
    none is (the table's row is older than the log). Applying just the rows after the match
    adds exactly the missing costs once.
    """
    seen = [False] * len(results)
    if not results:
        return seen
    keys = list({(r.job_name, r.record_key) for r in results})
    table = {
        (job, key): (run, line, status, created)
        for job, key, run, line, status, created in con.execute(
            "SELECT r.job_name, r.record_key, r.run_id, r.line_no, r.status, "
            "r.created_at FROM results r SEMI JOIN (SELECT unnest($1::VARCHAR[]) "
            "AS job_name, unnest($2::VARCHAR[]) AS record_key) j "
            "USING (job_name, record_key)",
            [[k[0] for k in keys], [k[1] for k in keys]],
        ).fetchall()
    }
    last: dict[tuple[str, str], int] = {}  # key → index of its last committed row
    for i, r in enumerate(results):
        have = table.get((r.job_name, r.record_key))
        if have is None:
            continue
        created = None if r.created_at is None else utc(r.created_at)
        if have[:3] == (r.run_id, r.line_no, str(r.status)) and (
            created is None or have[3] == created
        ):
            last[(r.job_name, r.record_key)] = i
    for i, r in enumerate(results):
        if i <= last.get((r.job_name, r.record_key), -1):
            seen[i] = True
    return seen
