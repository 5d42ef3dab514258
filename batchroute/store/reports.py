"""Report queries: spend, calls, tokens and outcomes grouped by dimensions, and a day's spend.

Read-only SQL over an open connection; rendering is `batchroute.report`'s business, not this.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import duckdb

from ..errors import ConfigError
from ..types import RecordStatus
from .encode import utc

DIMENSIONS = ("day", "tier", "model", "task", "job", "run")

# Dimension → (expression over attempts a [+ results r], expression over results r).
_DIM_SQL: dict[str, tuple[str, str]] = {
    "day": ("strftime(a.started_at, '%Y-%m-%d')", "strftime(r.created_at, '%Y-%m-%d')"),
    "tier": ("a.tier", "r.tier"),
    "model": ("a.model", "COALESCE(r.model_served, r.model_requested)"),
    "task": ("r.task_type", "r.task_type"),
    "job": ("a.job_name", "r.job_name"),
    "run": ("a.run_id", "r.run_id"),
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class ReportRow:
    """One group of a report. `key` holds one value per dimension of `ReportData.by`.

    Spend and calls come from `attempts`; tokens and record outcomes from `results`.
    """

    key: tuple[str | None, ...]
    calls: int = 0
    cost_usd: Decimal = Decimal(0)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    done: int = 0
    failed: int = 0
    invalid: int = 0
    pending: int = 0


@dataclass(frozen=True, slots=True)
class ReportData:
    """What `batchroute report` renders; produced by `ResultStore.report`."""

    by: tuple[str, ...]
    since: datetime | None
    job_name: str | None
    rows: tuple[ReportRow, ...]
    totals: ReportRow
    today: date
    spent_today: Decimal
    generated_at: datetime


def check_dimensions(by: Sequence[str]) -> tuple[str, ...]:
    """`by` as a tuple; ConfigError for a dimension not in DIMENSIONS."""
    dims = tuple(by)
    unknown = [d for d in dims if d not in _DIM_SQL]
    if unknown:
        raise ConfigError(
            f"unknown report dimension {unknown[0]!r}; choose from {', '.join(DIMENSIONS)}"
        )
    return dims


def query_report(
    con: duckdb.DuckDBPyConnection,
    dims: tuple[str, ...],
    since: datetime | None,
    job_name: str | None,
    now: datetime,
) -> ReportData:
    """The report grouped by `dims` (checked), with totals and the spend of `now`'s UTC day."""
    today = now.astimezone(UTC).date()
    groups = _report_groups(con, dims, since, job_name)
    totals = _report_groups(con, (), since, job_name)
    return ReportData(
        by=dims,
        since=since,
        job_name=job_name,
        rows=tuple(groups),
        totals=totals[0] if totals else ReportRow(key=()),
        today=today,
        spent_today=spent(con, today, job_name),
        generated_at=now,
    )


def spent(con: duckdb.DuckDBPyConnection, day: date, job_name: str | None) -> Decimal:
    """Settled spend on that UTC day, from attempts (job_name None: whole database)."""
    start = datetime(day.year, day.month, day.day)
    sql = "SELECT COALESCE(SUM(cost_usd), 0) FROM attempts WHERE started_at >= ? AND started_at < ?"
    params: list[Any] = [start, start + timedelta(days=1)]
    if job_name is not None:
        sql += " AND job_name = ?"
        params.append(job_name)
    row = con.execute(sql, params).fetchone()
    return Decimal(row[0]) if row else Decimal(0)


def _report_groups(
    con: duckdb.DuckDBPyConnection,
    dims: tuple[str, ...],
    since: datetime | None,
    job_name: str | None,
) -> list[ReportRow]:
    """Two grouped queries (attempts side, results side) merged by group key."""
    a_where, r_where = ["TRUE"], ["TRUE"]
    params: list[Any] = []
    if since is not None:
        a_where.append("a.started_at >= ?")
        r_where.append("r.created_at >= ?")
        params.append(utc(since))
    if job_name is not None:
        a_where.append("a.job_name = ?")
        r_where.append("r.job_name = ?")
        params.append(job_name)
    a_keys = [_DIM_SQL[d][0] for d in dims]
    r_keys = [_DIM_SQL[d][1] for d in dims]
    join = " LEFT JOIN results r USING (job_name, record_key)" if "task" in dims else ""
    group = f" GROUP BY {', '.join(str(i + 1) for i in range(len(dims)))}" if dims else ""
    a_sql = (
        f"SELECT {''.join(k + ', ' for k in a_keys)}COUNT(*), COALESCE(SUM(a.cost_usd), 0) "
        f"FROM attempts a{join} WHERE {' AND '.join(a_where)}{group}"
    )
    r_sql = (
        f"SELECT {''.join(k + ', ' for k in r_keys)}"
        "COALESCE(SUM(r.prompt_tokens), 0), COALESCE(SUM(r.completion_tokens), 0), "
        + ", ".join(f"COUNT(*) FILTER (WHERE r.status = '{s}')" for s in RecordStatus)
        + f" FROM results r WHERE {' AND '.join(r_where)}{group}"
    )
    n = len(dims)
    merged: dict[tuple[str | None, ...], dict[str, Any]] = {}
    for row in con.execute(a_sql, params).fetchall():
        entry = merged.setdefault(tuple(row[:n]), {})
        entry.update(calls=int(row[n]), cost_usd=Decimal(row[n + 1]))
    for row in con.execute(r_sql, params).fetchall():
        entry = merged.setdefault(tuple(row[:n]), {})
        entry.update(prompt_tokens=int(row[n]), completion_tokens=int(row[n + 1]))
        entry.update({str(s): int(v) for s, v in zip(RecordStatus, row[n + 2 :], strict=True)})
    if not dims and not merged:
        merged[()] = {}
    ordered = sorted(merged.items(), key=lambda kv: tuple((v is None, v or "") for v in kv[0]))
    return [ReportRow(key=k, **v) for k, v in ordered]
