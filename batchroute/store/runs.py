"""The `runs` table's rows at a run's start (shared by `ResultStore.start_run`,
`close_stale_runs` and `begin_run`, which does both in one transaction) and at its end
(`finish_run`, and `end_run`, which counts the job's statuses in the same transaction)."""

from __future__ import annotations

from datetime import date, datetime

import duckdb

from ..types import RecordStatus, RunCounts, RunStatus
from . import fixes as _fixes
from .columns import MONEY
from .encode import money, utc


def insert_run(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    job_name: str,
    job_path: str,
    started_at: datetime,
    version: str,
) -> None:
    """Record a new run as 'running'."""
    con.execute(
        "INSERT INTO runs (run_id, job_name, job_path, started_at, status, "
        "batchroute_version) VALUES (?, ?, ?, ?, ?, ?)",
        [run_id, job_name, job_path, utc(started_at), str(RunStatus.RUNNING), version],
    )


def close_stale(con: duckdb.DuckDBPyConnection) -> int:
    """Mark runs left 'running' by a dead process as 'interrupted' (the finish time is the
    last attempt's start, the cost the sum of its attempts); returns how many."""
    rows = con.execute(
        "UPDATE runs SET status = ?, "
        "finished_at = COALESCE((SELECT MAX(a.started_at) FROM attempts a "
        "WHERE a.run_id = runs.run_id), runs.started_at), "
        "cost_usd = (SELECT COALESCE(SUM(a.cost_usd), 0) FROM attempts a "
        "WHERE a.run_id = runs.run_id) "
        "WHERE status = ? RETURNING run_id",
        [str(RunStatus.INTERRUPTED), str(RunStatus.RUNNING)],
    ).fetchall()
    return len(rows)


def finish(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    status: RunStatus,
    counts: RunCounts,
    finished_at: datetime,
) -> None:
    """Record the end of a run with its counters and cost."""
    con.execute(
        "UPDATE runs SET status = ?, finished_at = ?, records_seen = ?, "
        "records_done = ?, records_failed = ?, records_invalid = ?, "
        f"records_pending = ?, cost_usd = CAST(? AS {MONEY}), records_duplicate = ? "
        "WHERE run_id = ?",
        [
            str(status),
            utc(finished_at),
            counts.seen,
            counts.done,
            counts.failed,
            counts.invalid,
            counts.pending,
            money(counts.cost_usd),
            counts.duplicates,
            run_id,
        ],
    )


def status_counts(con: duckdb.DuckDBPyConnection, job_name: str) -> dict[str, int]:
    """How many of this job's records are in each status, over all runs."""
    rows = con.execute(
        "SELECT status, count(*) FROM results WHERE job_name = ? GROUP BY status", [job_name]
    ).fetchall()
    return {str(s): int(n) for s, n in rows}


# A paid answer the quality checks sent up a tier (their error types: `runner.quality`; an
# outage's escalation, even one answered 200 such as `no_choices`, may pass tomorrow). Only
# records still pending, and only since the record last ended (an `ok` or `failed` attempt): a
# final record is sent again only when asked (--retry-failed, --rerun-changed), from its routed
# tier, and what it climbed before is about the request it had then (the review of gaps6).
_CLIMBED = f"""
SELECT a.record_key, list(DISTINCT a.tier) FROM attempts a
JOIN results r USING (job_name, record_key)
WHERE a.job_name = ? AND r.status = '{RecordStatus.PENDING}' AND a.outcome = 'escalate'
    AND a.error_type IN ('empty_content', 'finish_length', 'invalid_json')
    AND a.tier IS NOT NULL
    AND NOT EXISTS (
        SELECT 1 FROM attempts e
        WHERE e.job_name = a.job_name AND e.record_key = a.record_key
            AND e.outcome IN ('ok', 'failed') AND e.started_at >= a.started_at)
GROUP BY a.record_key
"""


def climbed(con: duckdb.DuckDBPyConnection, job_name: str) -> dict[str, tuple[str, ...]]:
    """The job's pending records that climbed a tier after a paid answer failed a quality
    check (a run ended, or was killed, before the next tier answered): key → the tiers they
    climbed from. The next run starts them past those tiers (`policy.resume_tier`)."""
    rows = con.execute(_CLIMBED, [job_name]).fetchall()
    return {str(key): tuple(tiers) for key, tiers in rows}


def end(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    status: RunStatus,
    counts: RunCounts,
    finished_at: datetime,
    job_name: str,
    learn_since: date | None,
) -> dict[str, int]:
    """`finish`, then the job's `status_counts` (`ResultStore.end_run`); with `learn_since`,
    the job's attempts booked at their reservation with no generation id are raised first to
    what their model is known to bill (`fixes.raise_unidentified`)."""
    finish(con, run_id, status, counts, finished_at)
    if learn_since is not None:
        _fixes.raise_unidentified(con, job_name, learn_since)
    return status_counts(con, job_name)
