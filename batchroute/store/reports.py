"""Report queries: spend, calls, tokens, outcomes and savings grouped by dimensions; failures,
latency and a day's spend.

Read-only SQL over an open connection, through migration 7's views as migration 10 left them:
`calls` (every attempt, credited to the model that served it, with its lane) and `savings`
(every record against the job's top model). Rendering is `batchroute.report`'s business, not this.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import duckdb

from ..errors import ConfigError
from ..types import CostSource, RecordStatus
from .batches import open_reserved
from .encode import utc

_RESERVED = str(CostSource.RESERVED)  # booked at its worst case: the bill is not known yet
DIMENSIONS = ("day", "tier", "model", "task", "job", "run", "arm", "lane")

# Dimension → its key columns: (name, expression over the `calls` view c, over `savings` s).
# Calls and spend are counted where the call was made (its day, tier, the model that served it);
# tokens, outcomes and savings where the record ended (its last tier and answer).
_DIM_SQL: dict[str, tuple[tuple[str, str, str], ...]] = {
    "day": (("day", "strftime(c.started_at, '%Y-%m-%d')", "strftime(s.created_at, '%Y-%m-%d')"),),
    "tier": (("tier", "c.tier", "s.tier"),),
    "model": (("model", "c.model", "s.model"), ("requested", "c.model_requested", "s.requested")),
    "task": (("task", "c.task_type", "s.task_type"),),
    "job": (("job", "c.job_name", "s.job_name"),),
    "run": (("run", "c.run_id", "s.run_id"),),
    "arm": (("arm", "c.arm", "s.arm"),),
    # migration 10: a call's lane ('batch' or 'sync'); a record's, where its answer came from
    "lane": (("lane", "c.lane", "s.lane"),),
}  # fmt: skip

# The savings view with the record's creation time and requested model, for filters and keys.
_RECORDS = (
    "(SELECT v.*, r.created_at, r.model_requested AS requested FROM savings v "
    "JOIN results r USING (job_name, record_key))"
)


@dataclass(frozen=True, slots=True)
class ReportRow:
    """One group of a report. `key` holds one value per column of `ReportData.columns`.

    Calls, spend and call outcomes come from `attempts`; tokens, record outcomes and savings
    from `results` (the `savings` view): `baseline_usd` is what the priced records would have
    cost on the job's top model, `priced_cost_usd` what they did cost. `reserved_calls` and
    `reserved_usd`: the part of `calls` and `cost_usd` booked at a reservation (outcome unknown,
    `cost_source = 'reserved'`), an upper bound of the bill, not the bill.
    """

    key: tuple[str | None, ...]
    calls: int = 0
    cost_usd: Decimal = Decimal(0)
    retried: int = 0
    fell_back: int = 0
    escalated: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    done: int = 0
    failed: int = 0
    invalid: int = 0
    pending: int = 0
    priced: int = 0
    baseline_usd: Decimal = Decimal(0)
    priced_cost_usd: Decimal = Decimal(0)
    reserved_calls: int = 0
    reserved_usd: Decimal = Decimal(0)

    @property
    def saved_usd(self) -> Decimal:
        """What routing saved on the priced records (negative: it cost more)."""
        return self.baseline_usd - self.priced_cost_usd


@dataclass(frozen=True, slots=True)
class FailureRow:
    """Failed calls of one error type, with the latest message as a sample."""

    error_type: str
    calls: int
    records: int
    models: str
    sample_message: str | None
    cost_usd: Decimal


@dataclass(frozen=True, slots=True)
class RecordFailureRow:
    """Failed or invalid records of one error type (some never made a call: a worst case over
    the whole cap, a bad input line), with the latest message as a sample."""

    error_type: str
    status: str
    records: int
    sample_message: str | None


@dataclass(frozen=True, slots=True)
class LatencyRow:
    """Latency percentiles (ms) of the calls a model served."""

    model: str
    calls: int
    p50_ms: float
    p95_ms: float
    p99_ms: float


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
    failures: tuple[FailureRow, ...] = ()
    latency: tuple[LatencyRow, ...] = ()
    baseline_models: tuple[str, ...] = ()
    record_failures: tuple[RecordFailureRow, ...] = ()
    reserved_with_id: int = 0
    batches_out: Decimal = Decimal(0)  # in `spent_today`: batches begun today, not collected

    @property
    def columns(self) -> tuple[str, ...]:
        """The key columns of the rows ('model' adds 'requested' beside it)."""
        return tuple(col for d in self.by for col, _, _ in _DIM_SQL[d])


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
    if job_name is not None:
        _check_job(con, job_name)
    where = _Filter(since, job_name)
    totals = _report_groups(con, (), where)
    # A batch still out is committed spend (it cannot be cancelled; the provider bills it when
    # it runs): counted today at its reservation, as a run's start counts it (audit5).
    out = open_reserved(con, today, job_name)
    return ReportData(
        by=dims,
        since=since,
        job_name=job_name,
        rows=tuple(_report_groups(con, dims, where)),
        totals=totals[0] if totals else ReportRow(key=()),
        today=today,
        spent_today=spent(con, today, job_name) + out,
        generated_at=now,
        failures=_failures(con, where),
        latency=_latency(con, where),
        baseline_models=_baseline_models(con, where),
        record_failures=_record_failures(con, where),
        reserved_with_id=_reserved_with_id(con, where),
        batches_out=out,
    )


def _check_job(con: duckdb.DuckDBPyConnection, job_name: str) -> None:
    """A --job the database has never seen (a typo) is an error, not a report of zeros."""
    jobs = [
        r[0]
        for r in con.execute(
            "SELECT job_name FROM runs UNION SELECT job_name FROM results ORDER BY 1"
        ).fetchall()
    ]
    if job_name not in jobs:
        known = f"its jobs: {', '.join(jobs)}" if jobs else "it holds no job yet"
        raise ConfigError(f"--job {job_name!r}: no such job in the database; {known}")


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


class _Filter:
    """The --since and --job conditions, over calls (c) and records (s)."""

    def __init__(self, since: datetime | None, job_name: str | None) -> None:
        self.c, self.s, self.params = ["TRUE"], ["TRUE"], list[Any]()
        if since is not None:
            self.c.append("c.started_at >= ?")
            self.s.append("s.created_at >= ?")
            self.params.append(utc(since))
        if job_name is not None:
            self.c.append("c.job_name = ?")
            self.s.append("s.job_name = ?")
            self.params.append(job_name)

    def calls(self) -> str:
        return " AND ".join(self.c)

    def records(self) -> str:
        return " AND ".join(self.s)


def _report_groups(
    con: duckdb.DuckDBPyConnection, dims: tuple[str, ...], where: _Filter
) -> list[ReportRow]:
    """Two grouped queries (the calls side, the records side) merged by group key."""
    cols = [c for d in dims for c in _DIM_SQL[d]]
    c_keys = "".join(f"{c[1]}, " for c in cols)
    s_keys = "".join(f"{c[2]}, " for c in cols)
    group = f" GROUP BY {', '.join(str(i + 1) for i in range(len(cols)))}" if cols else ""
    c_sql = (
        f"SELECT {c_keys}COUNT(*), COALESCE(SUM(c.cost_usd), 0), "
        "COUNT(*) FILTER (WHERE c.outcome = 'retry'), "
        "COUNT(*) FILTER (WHERE c.outcome = 'fallback' OR c.served_by_other), "
        "COUNT(*) FILTER (WHERE c.outcome = 'escalate'), "
        f"COUNT(*) FILTER (WHERE c.cost_source = '{_RESERVED}'), "
        f"COALESCE(SUM(c.cost_usd) FILTER (WHERE c.cost_source = '{_RESERVED}'), 0) "
        f"FROM calls c WHERE {where.calls()}{group}"
    )
    s_sql = (
        f"SELECT {s_keys}COALESCE(SUM(s.prompt_tokens), 0), "
        "COALESCE(SUM(s.completion_tokens), 0), "
        + "".join(f"COUNT(*) FILTER (WHERE s.status = '{st}'), " for st in RecordStatus)
        + "COUNT(s.baseline_usd), COALESCE(SUM(s.baseline_usd), 0), "
        "COALESCE(SUM(s.cost_usd) FILTER (WHERE s.baseline_usd IS NOT NULL), 0) "
        f"FROM {_RECORDS} s WHERE {where.records()}{group}"
    )
    n = len(cols)
    merged: dict[tuple[str | None, ...], dict[str, Any]] = {}
    for row in con.execute(c_sql, where.params).fetchall():
        entry = merged.setdefault(tuple(row[:n]), {})
        entry.update(calls=int(row[n]), cost_usd=Decimal(row[n + 1]))
        entry.update(retried=int(row[n + 2]), fell_back=int(row[n + 3]))
        entry.update(escalated=int(row[n + 4]), reserved_calls=int(row[n + 5]))
        entry.update(reserved_usd=Decimal(row[n + 6]))
    k = len(RecordStatus)
    for row in con.execute(s_sql, where.params).fetchall():
        entry = merged.setdefault(tuple(row[:n]), {})
        entry.update(prompt_tokens=int(row[n]), completion_tokens=int(row[n + 1]))
        statuses = row[n + 2 : n + 2 + k]
        entry.update({str(st): int(v) for st, v in zip(RecordStatus, statuses, strict=True)})
        entry.update(priced=int(row[n + 2 + k]), baseline_usd=Decimal(row[n + 3 + k]))
        entry.update(priced_cost_usd=Decimal(row[n + 4 + k]))
    if not cols and not merged:
        merged[()] = {}
    ordered = sorted(merged.items(), key=lambda kv: tuple((v is None, v or "") for v in kv[0]))
    return [ReportRow(key=key, **v) for key, v in ordered]


def _reserved_with_id(con: duckdb.DuckDBPyConnection, where: _Filter) -> int:
    """Calls still booked at their reservation that have a generation id: the ones the next
    run's reconciliation asks GET /generation about (`fixes.reserved_attempts`)."""
    row = con.execute(
        f"SELECT COUNT(*) FROM attempts c WHERE c.cost_source = '{_RESERVED}' "
        f"AND c.generation_id IS NOT NULL AND {where.calls()}",
        where.params,
    ).fetchone()
    return int(row[0]) if row else 0


def _failures(con: duckdb.DuckDBPyConnection, where: _Filter) -> tuple[FailureRow, ...]:
    """Failed calls by error type (the `failures` view, under the report's filters)."""
    rows = con.execute(
        "SELECT error_type, COUNT(*), COUNT(DISTINCT (job_name, record_key)), "
        "string_agg(DISTINCT model, ', ' ORDER BY model), arg_max(error_message, started_at), "
        f"SUM(cost_usd) FROM calls c WHERE error_type IS NOT NULL AND {where.calls()} "
        "GROUP BY 1 ORDER BY 2 DESC, 1",
        where.params,
    ).fetchall()
    return tuple(
        FailureRow(r[0], int(r[1]), int(r[2]), r[3] or "", r[4], Decimal(r[5])) for r in rows
    )


def _record_failures(
    con: duckdb.DuckDBPyConnection, where: _Filter
) -> tuple[RecordFailureRow, ...]:
    """Failed and invalid records by error type, under the report's filters."""
    rows = con.execute(
        "SELECT COALESCE(error_type, '(none)'), status, COUNT(*), "
        "arg_max(error_message, (created_at, record_key)) FROM results s "
        f"WHERE status IN ('failed', 'invalid') AND {where.records()} "
        "GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2",
        where.params,
    ).fetchall()
    return tuple(RecordFailureRow(r[0], r[1], int(r[2]), r[3]) for r in rows)


def _latency(con: duckdb.DuckDBPyConnection, where: _Filter) -> tuple[LatencyRow, ...]:
    """Latency percentiles per served model of synchronous calls (the `latency_by_model` view,
    filtered): a batch call's latency is its time in OpenRouter's queue."""
    rows = con.execute(
        "SELECT model, COUNT(*), quantile_cont(latency_ms, 0.5), "
        "quantile_cont(latency_ms, 0.95), quantile_cont(latency_ms, 0.99) "
        f"FROM calls c WHERE latency_ms > 0 AND c.lane = 'sync' AND {where.calls()} "
        "GROUP BY 1 ORDER BY 1",
        where.params,
    ).fetchall()
    return tuple(LatencyRow(r[0], int(r[1]), float(r[2]), float(r[3]), float(r[4])) for r in rows)


def _baseline_models(con: duckdb.DuckDBPyConnection, where: _Filter) -> tuple[str, ...]:
    """The models the priced records of the report were measured against."""
    rows = con.execute(
        f"SELECT DISTINCT baseline_model FROM {_RECORDS} s "
        f"WHERE baseline_model IS NOT NULL AND {where.records()} ORDER BY 1",
        where.params,
    ).fetchall()
    return tuple(r[0] for r in rows)
