"""Idempotent writes of rows a killed run logged but may not have committed (journal replay).

Decides, row by row, which rows the database holds already. Reads no files: rows come in.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb

from ..types import AttemptOutcome, AttemptRow, RecordStatus, ResultRow, RunStatus
from .connect import transaction
from .encode import bulk_write, dedupe, utc, write_results
from .fixes import resum_runs


def write_missing(
    con: duckdb.DuckDBPyConnection,
    results: Sequence[ResultRow],
    attempts: Sequence[AttemptRow],
    now: datetime,
) -> int:
    """Write the rows (in log order) the database does not hold yet; returns how many
    records were written. Run inside one transaction, so a replay is all or nothing."""
    merged, new_attempts = missing(con, results, attempts)
    if merged:
        write_results(con, merged, now)
    if new_attempts:
        bulk_write(con, "attempts", new_attempts, now)
        _cost_is_sum(con, new_attempts, now)
        runs = sorted({a.run_id for a in new_attempts})
        con.execute(_LOST_RUNS, [runs])
        # A run's rows may come in over more than one replay (a segment found by a later
        # start): its row, made or closed by an earlier step, takes each step's calls too.
        resum_runs(con, set(runs))
    return len(merged)


# A run whose start writes never reached the file (a job's first run on a full disk: the
# writer made no database, gaps5) has calls in its journal but no `runs` row: it gets one
# here, as `close_stale` would have closed it (interrupted, ended at its last call, costing
# the sum of its calls), so that `runs` and `run_summary` hold its spend too.
_LOST_RUNS = f"""
INSERT INTO runs (run_id, job_name, started_at, finished_at, status, cost_usd)
SELECT run_id, min(job_name), min(started_at), max(started_at), '{RunStatus.INTERRUPTED}',
    sum(cost_usd)
FROM attempts WHERE list_contains($1::VARCHAR[], run_id) GROUP BY run_id
ON CONFLICT (run_id) DO NOTHING
"""


def missing(
    con: duckdb.DuckDBPyConnection, results: Sequence[ResultRow], attempts: Sequence[AttemptRow]
) -> tuple[list[ResultRow], list[AttemptRow]]:
    """The rows `write_missing` writes: the results the database does not hold, combined per
    key as the writes would combine them, and the attempts it does not hold."""
    had_a = _attempts_written(con, attempts)
    had_r = _results_written(con, results)
    merged = dedupe([r for r, had in zip(results, had_r, strict=True) if not had])
    return merged, [a for a, had in zip(attempts, had_a, strict=True) if not had]


def unreplayed(
    path: Path, results: Sequence[ResultRow], attempts: Sequence[AttemptRow], *, timeout: float
) -> tuple[list[ResultRow], list[AttemptRow]]:
    """`missing`, read from the file at `path` without writing (the dry run after a kill sees
    what the run's replay would add); retried for up to `timeout` while a writer holds it."""
    if not results and not attempts:
        return [], []
    with transaction(path, read_only=True, timeout=timeout) as con:
        return missing(con, results, attempts)


# A record's cost is the sum of all its attempts (design §4). A record's row is journaled with
# its answer, after its attempts: a kill in between (a call in flight, replayed as `killed` at
# its reservation; an answer that is retried, billed) leaves attempts whose cost no row holds.
# The records of replayed attempts get their rows' cost back to that sum, and a `pending` row
# if they have none (the status and answer of a row already there are kept): else the next
# run's row for the record leaves them out, and the results' books say less than the bill.
_PENDING_ROWS = f"""
INSERT INTO results (job_name, record_key, run_id, tier, status, attempts, escalations,
    created_at)
SELECT unnest($1::VARCHAR[]), unnest($2::VARCHAR[]), unnest($3::VARCHAR[]),
    unnest($4::VARCHAR[]), '{RecordStatus.PENDING}', unnest($5::INTEGER[]),
    unnest($7::INTEGER[]), CAST($6 AS TIMESTAMP)
ON CONFLICT (job_name, record_key) DO NOTHING
"""
_COST_IS_SUM = """
UPDATE results SET cost_usd = (SELECT COALESCE(SUM(a.cost_usd), 0) FROM attempts a
    WHERE a.job_name = results.job_name AND a.record_key = results.record_key)
FROM (SELECT unnest($1::VARCHAR[]) AS job_name, unnest($2::VARCHAR[]) AS record_key) k
WHERE results.job_name = k.job_name AND results.record_key = k.record_key
"""


def _cost_is_sum(
    con: duckdb.DuckDBPyConnection, attempts: Sequence[AttemptRow], now: datetime
) -> None:
    """Make the cost of the records of `attempts` (new in the table) the sum of theirs."""
    per: dict[tuple[str, str], tuple[str, str | None, int, int]] = {}
    for a in attempts:
        _, _, n, up = per.get((a.job_name, a.record_key), (a.run_id, a.tier, 0, 0))
        up += a.outcome == AttemptOutcome.ESCALATE  # as `Trail.escalations` would have said
        per[(a.job_name, a.record_key)] = (a.run_id, a.tier, n + 1, up)
    jobs, keys = (list(c) for c in zip(*per, strict=True))
    run_ids, tiers, counts, ups = (list(c) for c in zip(*per.values(), strict=True))
    stamp = now.isoformat(sep=" ")
    con.execute(_PENDING_ROWS, [jobs, keys, run_ids, tiers, counts, stamp, ups])
    con.execute(_COST_IS_SUM, [jobs, keys])


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
