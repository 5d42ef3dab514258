"""The `batches` table (migration 8): the Batch API lane's durable record of each submission.

Each function runs inside the caller's transaction (`ResultStore` opens it). Collecting a batch
writes its items' result and attempt rows and marks it `collected` in one transaction, so a kill
-9 leaves either the whole batch collected or none of it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import duckdb
import orjson

from ..types import (
    AttemptOutcome,
    AttemptRow,
    BatchItem,
    BatchRow,
    BatchStatus,
    RecordStatus,
    ResultRow,
)
from .columns import MONEY
from .encode import bulk_write, dedupe, money, utc

CLOSED = (BatchStatus.COLLECTED, BatchStatus.ABANDONED, BatchStatus.REJECTED)
"""Statuses of a row whose records are free again (collected, or never submitted)."""

_COLS = (
    "batch_key, batch_id, job_name, run_id, tier, model, status, round, request_count, items, "
    "intent_at, submitted_at, finished_at, reserved_usd, settled_usd, error_message"
)


def _items_json(items: Sequence[BatchItem]) -> str:
    return orjson.dumps([dataclasses.astuple(i) for i in items]).decode()


def _items(raw: str) -> list[BatchItem]:
    return [BatchItem(*i) for i in orjson.loads(raw)]


def insert(con: duckdb.DuckDBPyConnection, row: BatchRow) -> None:
    """Write a new row (an intent before its POST, or a rejected submission)."""
    con.execute(
        f"INSERT INTO batches ({_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
        f"CAST(? AS {MONEY}), CAST(? AS {MONEY}), ?)",
        [
            row.batch_key, row.batch_id, row.job_name, row.run_id, row.tier, row.model,
            str(row.status), row.round, len(row.items), _items_json(row.items),
            utc(row.intent_at), row.submitted_at and utc(row.submitted_at),
            row.finished_at and utc(row.finished_at), money(row.reserved_usd),
            None if row.settled_usd is None else money(row.settled_usd), row.error_message,
        ],
    )  # fmt: skip


def update(con: duckdb.DuckDBPyConnection, row: BatchRow) -> None:
    """Save the row's batch id, status, times, settled cost and error."""
    con.execute(
        "UPDATE batches SET batch_id = ?, status = ?, submitted_at = ?, finished_at = ?, "
        f"settled_usd = CAST(? AS {MONEY}), error_message = ? WHERE batch_key = ?",
        [
            row.batch_id, str(row.status), row.submitted_at and utc(row.submitted_at),
            row.finished_at and utc(row.finished_at),
            None if row.settled_usd is None else money(row.settled_usd), row.error_message,
            row.batch_key,
        ],
    )  # fmt: skip


def collect(
    con: duckdb.DuckDBPyConnection,
    row: BatchRow,
    results: Sequence[ResultRow],
    attempts: Sequence[AttemptRow],
    now: datetime,
) -> None:
    """The batch's rows and its `collected` status, in the caller's one transaction."""
    merged = dedupe(results)
    if merged:
        bulk_write(con, "results", merged, utc(now))
    if attempts:
        bulk_write(con, "attempts", attempts, utc(now))
    row.status = BatchStatus.COLLECTED
    update(con, row)
    con.execute(
        "UPDATE batches SET collected_at = ? WHERE batch_key = ?", [utc(now), row.batch_key]
    )


def open_rows(
    con: duckdb.DuckDBPyConnection, job_name: str, *, others: bool = False
) -> list[BatchRow]:
    """This job's batches whose records are not free yet (intent, submitted, in progress,
    finished but not collected), oldest first; `others`: every other job's."""
    rows = con.execute(
        f"SELECT {_COLS} FROM batches WHERE job_name {'<>' if others else '='} ? "
        "AND NOT list_contains(?::VARCHAR[], status) ORDER BY intent_at, batch_key",
        [job_name, [str(s) for s in CLOSED]],
    ).fetchall()
    return [_row(r) for r in rows]


def all_rows(con: duckdb.DuckDBPyConnection, job_name: str | None) -> list[BatchRow]:
    """Every batch row (of one job, or of the database), oldest first."""
    sql = f"SELECT {_COLS} FROM batches"
    params: list[Any] = []
    if job_name is not None:
        sql += " WHERE job_name = ?"
        params.append(job_name)
    return [_row(r) for r in con.execute(sql + " ORDER BY intent_at, batch_key", params).fetchall()]


def once_marks(con: duckdb.DuckDBPyConnection, job_name: str) -> tuple[set[str], set[str]]:
    """What the collects said of the job's pending records, as the lane's two marks: records a
    first-round batch left unanswered when it expired (a `retry` batch attempt), owed their one
    resubmission; and records whose batch item failed or whose once is spent (a `fallback`
    batch attempt, or a batch of round 2 held them), for the tier's synchronous chain."""
    rows = con.execute(
        "SELECT record_key, bool_or(outcome = ?) FROM attempts "
        "WHERE job_name = ? AND attempt_no = 0 AND outcome IN (?, ?) "  # 0: a batch item
        "AND record_key IN (SELECT record_key FROM results WHERE job_name = ? AND status = ?) "
        "GROUP BY record_key",
        [str(AttemptOutcome.FALLBACK), job_name, str(AttemptOutcome.RETRY),
         str(AttemptOutcome.FALLBACK), job_name, str(RecordStatus.PENDING)],
    ).fetchall()  # fmt: skip
    owed = {str(k) for k, failed in rows if not failed}
    sync = {str(k) for k, failed in rows if failed}
    if owed:
        again = con.execute(
            f"SELECT {_COLS} FROM batches WHERE job_name = ? AND round >= 2", [job_name]
        ).fetchall()
        spent = {i.key for r in again for i in _row(r).items} & owed
        owed, sync = owed - spent, sync | spent
    return owed, sync


def known_ids(con: duckdb.DuckDBPyConnection) -> set[str]:
    """Every OpenRouter batch id this database has claimed (adoption must not take one twice)."""
    rows = con.execute("SELECT batch_id FROM batches WHERE batch_id IS NOT NULL").fetchall()
    return {str(r[0]) for r in rows}


def open_reserved(con: duckdb.DuckDBPyConnection, day: date, job_name: str | None) -> Decimal:
    """Reservations of batches begun that UTC day and not settled yet: committed spend (a batch
    cannot be cancelled), counted against the day until its items' attempts carry the bill."""
    start = datetime(day.year, day.month, day.day)
    sql = (
        "SELECT COALESCE(SUM(reserved_usd), 0) FROM batches WHERE intent_at >= ? "
        "AND intent_at < ? AND settled_usd IS NULL AND NOT list_contains(?::VARCHAR[], status)"
    )
    params: list[Any] = [start, start + timedelta(days=1), [str(s) for s in CLOSED]]
    if job_name is not None:
        sql += " AND job_name = ?"
        params.append(job_name)
    row = con.execute(sql, params).fetchone()
    return Decimal(row[0]) if row else Decimal(0)


def _row(r: tuple[Any, ...]) -> BatchRow:
    (key, bid, job, run, tier, model, status, rnd, _n, items, intent, sub, fin, res, settled,
     err) = r  # fmt: skip
    return BatchRow(
        key, job, run, tier, model, _items(items), intent, Decimal(res), status, int(rnd), bid,
        sub, fin, None if settled is None else Decimal(settled), err,
    )  # fmt: skip
