"""ResultStore: the DuckDB file (schema, numbered migrations, bulk writes, report queries).

The only module with SQL. It never holds the file open between calls: every operation opens
the file, works in one transaction and closes it, so readers can get in between flushes.
"""

from __future__ import annotations

import re
import tempfile
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import orjson

from .errors import ConfigError, StoreError
from .journal import Journal, read_journal
from .types import (
    AttemptRow,
    CostFix,
    CostSource,
    RecordStatus,
    ReservedAttempt,
    ResultRow,
    ResumeState,
    RunCounts,
    RunStatus,
)

SCHEMA_VERSION_TABLE = "batchroute_migrations"
MONEY = "DECIMAL(38,12)"  # exact; 12 decimals covers per-token prices (1e-12 USD)

_M1_TABLES = f"""
CREATE TABLE runs (
    run_id VARCHAR PRIMARY KEY, job_name VARCHAR NOT NULL, job_path VARCHAR,
    started_at TIMESTAMP NOT NULL, finished_at TIMESTAMP, status VARCHAR NOT NULL,
    records_seen BIGINT NOT NULL DEFAULT 0, records_done BIGINT NOT NULL DEFAULT 0,
    records_failed BIGINT NOT NULL DEFAULT 0, records_invalid BIGINT NOT NULL DEFAULT 0,
    records_pending BIGINT NOT NULL DEFAULT 0, cost_usd {MONEY} NOT NULL DEFAULT 0,
    batchroute_version VARCHAR);
CREATE TABLE results (
    job_name VARCHAR NOT NULL, record_key VARCHAR NOT NULL, run_id VARCHAR, line_no BIGINT,
    task_type VARCHAR, complexity VARCHAR, tier VARCHAR, classifier VARCHAR,
    model_requested VARCHAR, model_served VARCHAR, provider VARCHAR, status VARCHAR NOT NULL,
    output VARCHAR, finish_reason VARCHAR, prompt_tokens BIGINT, completion_tokens BIGINT,
    cost_usd {MONEY} NOT NULL DEFAULT 0, cost_source VARCHAR, latency_ms INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0, escalations INTEGER NOT NULL DEFAULT 0,
    error_type VARCHAR, error_message VARCHAR, generation_id VARCHAR, created_at TIMESTAMP,
    PRIMARY KEY (job_name, record_key));
CREATE TABLE attempts (
    run_id VARCHAR NOT NULL, job_name VARCHAR NOT NULL, record_key VARCHAR NOT NULL,
    attempt_no INTEGER NOT NULL, tier VARCHAR, model VARCHAR, started_at TIMESTAMP NOT NULL,
    latency_ms INTEGER, http_status INTEGER, outcome VARCHAR NOT NULL, error_type VARCHAR,
    error_message VARCHAR, cost_usd {MONEY} NOT NULL DEFAULT 0, cost_source VARCHAR,
    generation_id VARCHAR);
"""

# Every timestamp column is TIMESTAMP holding UTC (naive); days are UTC days.
_M1_VIEWS = """
CREATE VIEW daily_spend AS
    SELECT CAST(started_at AS DATE) AS day, job_name AS scope, SUM(cost_usd) AS cost_usd
    FROM attempts GROUP BY ALL
    UNION ALL
    SELECT CAST(started_at AS DATE) AS day, '*' AS scope, SUM(cost_usd) AS cost_usd
    FROM attempts GROUP BY ALL;
CREATE VIEW cost_by_day AS
    SELECT CAST(started_at AS DATE) AS day, job_name, COUNT(*) AS calls,
           SUM(cost_usd) AS cost_usd
    FROM attempts GROUP BY ALL;
CREATE VIEW cost_by_model AS
    SELECT model, COUNT(*) AS calls, COUNT(*) FILTER (WHERE outcome = 'ok') AS ok_calls,
           SUM(cost_usd) AS cost_usd
    FROM attempts GROUP BY ALL;
CREATE VIEW cost_by_tier AS
    SELECT tier, COUNT(*) AS calls, SUM(cost_usd) AS cost_usd FROM attempts GROUP BY ALL;
CREATE VIEW cost_by_task AS
    SELECT r.task_type, COUNT(*) AS calls, SUM(a.cost_usd) AS cost_usd
    FROM attempts a LEFT JOIN results r USING (job_name, record_key) GROUP BY ALL;
CREATE VIEW run_summary AS
    SELECT r.run_id, r.job_name, r.status, r.started_at, r.finished_at,
           date_diff('second', r.started_at, r.finished_at) AS duration_s,
           r.records_seen, r.records_done, r.records_failed, r.records_invalid,
           r.records_pending, r.cost_usd,
           (SELECT COUNT(*) FROM attempts a WHERE a.run_id = r.run_id) AS calls,
           (SELECT COALESCE(SUM(a.cost_usd), 0) FROM attempts a WHERE a.run_id = r.run_id)
               AS attempts_cost_usd
    FROM runs r;
CREATE VIEW fallback_rates AS
    SELECT job_name, tier, model, COUNT(*) AS calls,
           COUNT(*) FILTER (WHERE outcome = 'ok') AS ok,
           COUNT(*) FILTER (WHERE outcome = 'retry') AS retried,
           COUNT(*) FILTER (WHERE outcome = 'fallback') AS fell_back,
           COUNT(*) FILTER (WHERE outcome = 'escalate') AS escalated,
           COUNT(*) FILTER (WHERE outcome = 'failed') AS failed,
           COUNT(*) FILTER (WHERE outcome IN ('fallback', 'escalate', 'failed'))
               / COUNT(*) AS fallback_rate
    FROM attempts GROUP BY ALL;
CREATE VIEW latency_by_model AS
    SELECT model, COUNT(*) AS calls, AVG(latency_ms) AS avg_ms,
           quantile_cont(latency_ms, 0.5) AS p50_ms, quantile_cont(latency_ms, 0.95) AS p95_ms,
           MAX(latency_ms) AS max_ms
    FROM attempts WHERE latency_ms IS NOT NULL GROUP BY ALL;
"""

_MIGRATIONS: tuple[tuple[str, str], ...] = (
    ("initial schema", _M1_TABLES + _M1_VIEWS),
    ("results.request_fp", "ALTER TABLE results ADD COLUMN request_fp VARCHAR;"),
    (
        "catalog_cache",
        "CREATE TABLE catalog_cache (fetched_at TIMESTAMP NOT NULL, source VARCHAR, raw BLOB);",
    ),
    (
        "attempts: reservation, usage.cost and BYOK upstream cost",
        f"ALTER TABLE attempts ADD COLUMN reserved_usd {MONEY};"
        f"ALTER TABLE attempts ADD COLUMN usage_cost_usd {MONEY};"
        f"ALTER TABLE attempts ADD COLUMN upstream_cost_usd {MONEY};",
    ),
    (
        "runs.records_duplicate",
        "ALTER TABLE runs ADD COLUMN records_duplicate BIGINT NOT NULL DEFAULT 0;",
    ),
)
SCHEMA_VERSION = len(_MIGRATIONS)

# Column name → SQL list type used to pass each column as one list parameter to unnest().
# Money travels as exact decimal strings and is cast server-side, never via float.
_RESULT_COLS: tuple[tuple[str, str], ...] = (
    ("job_name", "VARCHAR"), ("record_key", "VARCHAR"), ("run_id", "VARCHAR"),
    ("line_no", "BIGINT"), ("task_type", "VARCHAR"), ("complexity", "VARCHAR"),
    ("tier", "VARCHAR"), ("classifier", "VARCHAR"), ("model_requested", "VARCHAR"),
    ("model_served", "VARCHAR"), ("provider", "VARCHAR"), ("status", "VARCHAR"),
    ("output", "VARCHAR"), ("finish_reason", "VARCHAR"), ("prompt_tokens", "BIGINT"),
    ("completion_tokens", "BIGINT"), ("cost_usd", MONEY), ("cost_source", "VARCHAR"),
    ("latency_ms", "INTEGER"), ("attempts", "INTEGER"), ("escalations", "INTEGER"),
    ("error_type", "VARCHAR"), ("error_message", "VARCHAR"), ("generation_id", "VARCHAR"),
    ("request_fp", "VARCHAR"), ("created_at", "TIMESTAMP"),
)  # fmt: skip
_ATTEMPT_COLS: tuple[tuple[str, str], ...] = (
    ("run_id", "VARCHAR"), ("job_name", "VARCHAR"), ("record_key", "VARCHAR"),
    ("attempt_no", "INTEGER"), ("tier", "VARCHAR"), ("model", "VARCHAR"),
    ("started_at", "TIMESTAMP"), ("latency_ms", "INTEGER"), ("http_status", "INTEGER"),
    ("outcome", "VARCHAR"), ("error_type", "VARCHAR"), ("error_message", "VARCHAR"),
    ("cost_usd", MONEY), ("cost_source", "VARCHAR"), ("generation_id", "VARCHAR"),
    ("reserved_usd", MONEY), ("usage_cost_usd", MONEY), ("upstream_cost_usd", MONEY),
)  # fmt: skip
_ACCUMULATE = ("cost_usd", "attempts", "escalations")
_ANSWER = (
    "output", "finish_reason", "model_served", "provider", "prompt_tokens",
    "completion_tokens", "generation_id",
)  # fmt: skip
"""The columns of a paid answer: kept when a later row of the record has none (a rerun that
ended pending or failed must not throw away what was paid for)."""


def _bulk_insert_sql(table: str, cols: Sequence[tuple[str, str]], *, via_json: bool) -> str:
    """INSERT … SELECT unnest(col1), unnest(col2)…: whole columns as lists, zipped by unnest.

    via_json: the lists come from one columnar JSON object in a temp file (read_json; the
    fastest path measured, see docs/benchmarks.md); else one list parameter per column.
    Money travels as exact decimal text and is cast in SQL, never through a float.
    """
    exprs, spec = [], []
    for i, (name, typ) in enumerate(cols, start=1):
        wire = typ if typ in ("BIGINT", "INTEGER") else "VARCHAR"
        src = name if via_json else f"${i}::{wire}[]"
        exprs.append(f"CAST(unnest({src}) AS {typ})")
        spec.append(f"{name}: '{wire}[]'")
    names = ", ".join(n for n, _ in cols)
    sql = f"INSERT INTO {table} ({names}) SELECT {', '.join(exprs)}"
    if via_json:
        # {size} is filled with an int by the caller; the file name is a parameter.
        sql += (
            " FROM read_json($1, format = 'unstructured', maximum_object_size = {size}, "
            f"columns = {{{', '.join(spec)}}})"
        )
    return sql


def _on_conflict_sql() -> str:
    sets = []
    for name, _ in _RESULT_COLS:
        if name in ("job_name", "record_key"):
            continue
        if name in _ACCUMULATE:
            sets.append(f"{name} = results.{name} + excluded.{name}")
        elif name in _ANSWER:  # a row without an answer keeps the paid one from before
            sets.append(
                f"{name} = CASE WHEN excluded.output IS NULL THEN results.{name} "
                f"ELSE excluded.{name} END"
            )
        else:
            sets.append(f"{name} = excluded.{name}")
    return " ON CONFLICT (job_name, record_key) DO UPDATE SET " + ", ".join(sets)


_COLS = {"results": _RESULT_COLS, "attempts": _ATTEMPT_COLS}
_SQL: dict[tuple[str, bool], str] = {
    (table, j): _bulk_insert_sql(table, cols, via_json=j)
    + (_on_conflict_sql() if table == "results" else "")
    for table, cols in _COLS.items()
    for j in (True, False)
}


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    return value


def _bulk_write(
    con: duckdb.DuckDBPyConnection, table: str, rows: Sequence[Any], now: datetime
) -> None:
    columns = {name: _column(rows, name, typ, now) for name, typ in _COLS[table]}
    try:
        blob = orjson.dumps(columns)
    except orjson.JSONEncodeError:
        # A lone surrogate (text that is not valid Unicode) or an int beyond 64 bits: take
        # the slower list-parameter path, with unencodable characters replaced by '?'.
        params = [
            [_clean(v) for v in col] if col and any(isinstance(v, str) for v in col) else col
            for col in columns.values()
        ]
        con.execute(_SQL[(table, False)], params)
        return
    with tempfile.NamedTemporaryFile(prefix="batchroute-", suffix=".json") as f:
        f.write(blob)
        f.flush()
        con.execute(_SQL[(table, True)].replace("{size}", str(len(blob) + 1)), [f.name])


def _utc(dt: datetime) -> datetime:
    """A naive UTC datetime for a TIMESTAMP column (naive input is taken as UTC already)."""
    if dt.tzinfo is None:
        return dt
    return dt.astimezone(UTC).replace(tzinfo=None)


def _money(value: Decimal) -> str:
    return format(value, "f")


def _column(rows: Sequence[Any], name: str, typ: str, now: datetime) -> list[Any]:
    values = [getattr(r, name) for r in rows]
    if typ == MONEY:
        return [None if v is None else _money(v) for v in values]
    if typ == "TIMESTAMP":
        return [(now if v is None else _utc(v)).isoformat(sep=" ") for v in values]
    if typ == "VARCHAR":
        # StrEnum members are str already; plain str() keeps the value, not the enum repr.
        return [None if v is None else str(v) for v in values]
    return values


def _dedupe(results: Sequence[ResultRow]) -> list[ResultRow]:
    """Combine rows with the same key as if they had been written one after the other."""
    merged: dict[tuple[str, str], ResultRow] = {}
    for row in results:
        key = (row.job_name, row.record_key)
        prev = merged.get(key)
        if prev is not None:
            kept = {n: getattr(prev, n) for n in _ANSWER} if row.output is None else {}
            row = replace(
                row,
                cost_usd=prev.cost_usd + row.cost_usd,
                attempts=prev.attempts + row.attempts,
                escalations=prev.escalations + row.escalations,
                **kept,
            )
        merged[key] = row
    return list(merged.values())


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


def _is_lock_error(exc: BaseException) -> bool:
    text = str(exc)
    return (
        "Could not set lock" in text
        or "Conflicting lock" in text
        # the file is attached by another connection of this process (a write in flight)
        or "Unique file handle conflict" in text
    )


# Write connections attach the file with small row groups and one thread. DuckDB appends each
# committed flush to a table as a new row group, and the checkpoint on close then merges the
# small trailing row groups (vacuum) up to the row-group size: with the default 122,880 rows a
# merge rewrites ~120k rows of ~26 columns in memory at once, so peak RSS grew with the rows
# written (see docs/benchmarks.md, Memory). 8,192-row groups bound every merge; one thread
# keeps the checkpoint from rewriting several of them side by side.
_WRITE_ROW_GROUP_SIZE = 8_192
_WRITE_THREADS = 1
_WRITE_ALIAS = "batchroute_store"


def _open_for_write(path: Path) -> duckdb.DuckDBPyConnection:
    """A connection whose default catalog is `path` (created if missing), for writing."""
    con = duckdb.connect(
        ":memory:", config={"threads": _WRITE_THREADS, "temp_directory": f"{path}.tmp"}
    )
    try:
        literal = str(path).replace("'", "''")
        con.execute(
            f"ATTACH '{literal}' AS {_WRITE_ALIAS} (ROW_GROUP_SIZE {_WRITE_ROW_GROUP_SIZE})"
        )
        con.execute(f"USE {_WRITE_ALIAS}")
    except BaseException:
        con.close()
        raise
    return con


class ResultStore:
    """The batchroute DuckDB file. Opens the file per operation; never holds it open.

    Args:
        path: the database file.
        write_timeout: seconds a write keeps retrying while another process has the file open.
        read_timeout: the same for read-only report queries (kept short: a report gives up
            with a clear StoreError rather than hang while a run flushes).
        clock: returns the current time (UTC); injectable for tests.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        write_timeout: float = 30.0,
        read_timeout: float = 3.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.path = Path(path)
        self.write_timeout = write_timeout
        self.read_timeout = read_timeout
        self._clock = clock

    # -- connections ----------------------------------------------------------------------

    def _connect(self, *, read_only: bool) -> duckdb.DuckDBPyConnection:
        timeout = self.read_timeout if read_only else self.write_timeout
        deadline = time.monotonic() + timeout
        delay = 0.005
        while True:
            try:
                if read_only:
                    return duckdb.connect(str(self.path), read_only=True)
                return _open_for_write(self.path)
            except (duckdb.IOException, duckdb.ResourceInUseException) as exc:
                if not _is_lock_error(exc):
                    raise StoreError(f"cannot open {self.path}: {exc}") from exc
                if time.monotonic() >= deadline:
                    pid = re.search(r"PID (\d+)", str(exc))
                    who = f"process {pid.group(1)}" if pid else "another process"
                    raise StoreError(
                        f"{self.path} is locked by {who} (a run flushing, or an open SQL "
                        f"client); gave up after {timeout:g}s, try again"
                    ) from exc
                time.sleep(delay)
                delay = min(delay * 2, 0.1)
            except duckdb.Error as exc:
                raise StoreError(f"cannot open {self.path}: {exc}") from exc

    @contextmanager
    def _tx(self, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """Open, run one transaction, commit (or roll back) and close."""
        if read_only and not self.path.exists():
            raise StoreError(f"{self.path}: no such database file")
        con = self._connect(read_only=read_only)
        try:
            con.execute("BEGIN TRANSACTION")
            yield con
            con.execute("COMMIT")
        except duckdb.Error as exc:
            raise StoreError(f"{self.path}: {exc}") from exc
        finally:
            con.close()

    # -- schema ---------------------------------------------------------------------------

    @staticmethod
    def _tables(con: duckdb.DuckDBPyConnection) -> set[str]:
        rows = con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'"
        ).fetchall()
        return {r[0] for r in rows}

    def _schema_version(self, con: duckdb.DuckDBPyConnection) -> int:
        tables = self._tables(con)
        if SCHEMA_VERSION_TABLE not in tables:
            if tables:
                raise StoreError(
                    f"{self.path} is not a batchroute database (it has tables "
                    f"{', '.join(sorted(tables)[:5])} but no {SCHEMA_VERSION_TABLE})"
                )
            return 0
        row = con.execute(
            f"SELECT COALESCE(MAX(version), 0) FROM {SCHEMA_VERSION_TABLE}"
        ).fetchone()
        version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema version {version}, newer than this batchroute "
                f"knows ({SCHEMA_VERSION}); upgrade batchroute"
            )
        return version

    def migrate(self) -> None:
        """Create the schema or bring it up to date; idempotent."""
        with self._tx() as con:
            version = self._schema_version(con)
            if version == 0:
                con.execute(
                    f"CREATE TABLE {SCHEMA_VERSION_TABLE} (version INTEGER PRIMARY KEY, "
                    "name VARCHAR NOT NULL, applied_at TIMESTAMP NOT NULL)"
                )
            for number, (name, sql) in enumerate(_MIGRATIONS, start=1):
                if number <= version:
                    continue
                con.execute(sql)
                con.execute(
                    f"INSERT INTO {SCHEMA_VERSION_TABLE} VALUES (?, ?, ?)",
                    [number, name, _utc(self._clock())],
                )

    def schema_version(self) -> int:
        """The version recorded in the file (0 for an empty file)."""
        with self._tx(read_only=True) as con:
            return self._schema_version(con)

    # -- runs -----------------------------------------------------------------------------

    def start_run(
        self, run_id: str, job_name: str, job_path: str, started_at: datetime, version: str
    ) -> None:
        """Record a new run as 'running'."""
        with self._tx() as con:
            con.execute(
                "INSERT INTO runs (run_id, job_name, job_path, started_at, status, "
                "batchroute_version) VALUES (?, ?, ?, ?, ?, ?)",
                [run_id, job_name, job_path, _utc(started_at), str(RunStatus.RUNNING), version],
            )

    def finish_run(
        self, run_id: str, status: RunStatus, counts: RunCounts, finished_at: datetime
    ) -> None:
        """Record the end of a run with its counters and cost."""
        with self._tx() as con:
            con.execute(
                "UPDATE runs SET status = ?, finished_at = ?, records_seen = ?, "
                "records_done = ?, records_failed = ?, records_invalid = ?, "
                f"records_pending = ?, cost_usd = CAST(? AS {MONEY}), records_duplicate = ? "
                "WHERE run_id = ?",
                [
                    str(status),
                    _utc(finished_at),
                    counts.seen,
                    counts.done,
                    counts.failed,
                    counts.invalid,
                    counts.pending,
                    _money(counts.cost_usd),
                    counts.duplicates,
                    run_id,
                ],
            )

    def close_stale_runs(self) -> int:
        """Mark runs left 'running' by a dead process as 'interrupted'; returns how many.

        Only call while holding the run lock (then no live run exists). The finish time
        becomes the last attempt's start and the cost the sum of the run's attempts.
        """
        with self._tx() as con:
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

    # -- resume and budget ----------------------------------------------------------------

    def final_keys(
        self, job_name: str, *, statuses: Collection[RecordStatus]
    ) -> dict[str, str | None]:
        """record_key → request_fp for this job's results in `statuses` (one bulk query)."""
        if not statuses:
            return {}
        with self._tx() as con:
            rows = con.execute(
                "SELECT record_key, request_fp FROM results "
                "WHERE job_name = ? AND list_contains(?::VARCHAR[], status)",
                [job_name, [str(s) for s in statuses]],
            ).fetchall()
        return dict(rows)

    def status_counts(self, job_name: str) -> dict[str, int]:
        """How many of this job's records are in each status, over all runs."""
        with self._tx() as con:
            rows = con.execute(
                "SELECT status, count(*) FROM results WHERE job_name = ? GROUP BY status",
                [job_name],
            ).fetchall()
        return {str(s): int(n) for s, n in rows}

    def spent_on(self, day: date, *, job_name: str | None) -> Decimal:
        """Settled spend on that UTC day, from attempts (job_name None: whole database)."""
        with self._tx() as con:
            return _spent(con, day, job_name)

    def resume_state(
        self,
        job_name: str,
        *,
        final_statuses: Collection[RecordStatus],
        day: date,
        scope: str | None,
    ) -> ResumeState:
        """What a run of this job starts from: its final records, the failures it does not
        retry (failed/invalid records not in `final_statuses` are retried, so not counted),
        and the day's spend in `scope` (a job name, or None for the whole database)."""
        failed = {RecordStatus.FAILED, RecordStatus.INVALID}
        kept = failed & set(final_statuses)
        return ResumeState(
            final=self.final_keys(job_name, statuses=final_statuses),
            failed_before=frozenset(self.final_keys(job_name, statuses=kept)),
            spent=self.spent_on(day, job_name=scope),
        )

    # -- writes ---------------------------------------------------------------------------

    def write(
        self,
        results: Sequence[ResultRow],
        attempts: Sequence[AttemptRow],
        fixes: Sequence[CostFix] = (),
    ) -> None:
        """Upsert results, insert attempts, then apply cost fixes, in one transaction.

        An existing result keeps accumulating cost_usd, attempts and escalations (each run
        writes a record at most once); every other column takes the new value. Fixes come
        last so that they find the attempts written in the same call.
        """
        if not results and not attempts and not fixes:
            return
        now = _utc(self._clock())
        merged = _dedupe(results)
        with self._tx() as con:
            if merged:
                _bulk_write(con, "results", merged, now)
            if attempts:
                _bulk_write(con, "attempts", attempts, now)
            if fixes:
                _apply_fixes(con, fixes)

    def reserved_attempts(self, job_name: str, *, limit: int = 10_000) -> list[ReservedAttempt]:
        """Attempts of this job still booked at their reservation that have a generation id
        (their real cost can be asked of GET /generation), newest first."""
        with self._tx() as con:
            rows = con.execute(
                "SELECT run_id, job_name, record_key, attempt_no, generation_id, cost_usd "
                "FROM attempts WHERE job_name = ? AND cost_source = ? "
                "AND generation_id IS NOT NULL ORDER BY started_at DESC LIMIT ?",
                [job_name, str(CostSource.RESERVED), limit],
            ).fetchall()
        return [ReservedAttempt(r[0], r[1], r[2], int(r[3]), r[4], Decimal(r[5])) for r in rows]

    def apply_fixes(self, fixes: Sequence[CostFix]) -> int:
        """Replace reservations with real costs; returns how many attempts changed."""
        if not fixes:
            return 0
        with self._tx() as con:
            return _apply_fixes(con, fixes)

    def recover_journal(self) -> int:
        """Commit what a killed run journaled but never flushed; returns how many records.

        Call under the run lock, before reading resume state. Both files (`.flushing`, then
        the journal) are replayed in one transaction, row by row: only the rows the database
        does not hold yet are written (`_already_written`), so a file a flush committed just
        before the kill, one committed in part, and a replay killed before it deleted the
        files all come out right, and replaying twice changes nothing. The files go after
        the commit; if the replay fails, nothing is written and they stay for the next try.
        """
        journal = Journal(self.path)
        paths = [p for p in (journal.flushing, journal.path) if p.exists()]
        results, attempts = read_journal(*paths)
        merged: list[ResultRow] = []
        if results or attempts:
            now = _utc(self._clock())
            with self._tx() as con:
                had_r, had_a = self._already_written(con, results, attempts)
                merged = _dedupe([r for r, had in zip(results, had_r, strict=True) if not had])
                new_attempts = [a for a, had in zip(attempts, had_a, strict=True) if not had]
                if merged:
                    _bulk_write(con, "results", merged, now)
                if new_attempts:
                    _bulk_write(con, "attempts", new_attempts, now)
        for path in paths:
            path.unlink(missing_ok=True)
        return len(merged)

    @staticmethod
    def _already_written(
        con: duckdb.DuckDBPyConnection,
        results: Sequence[ResultRow],
        attempts: Sequence[AttemptRow],
    ) -> tuple[list[bool], list[bool]]:
        """Which journal rows (in journal order) the database holds already.

        Attempts: a row is there iff the same call is: (run, job, key, attempt number, start
        time) in `attempts`. The start time tells apart two calls of one key with the same
        attempt number in one run (an input that repeated an id, journaled by a version that
        sent both). Not the cost: reconciliation changes it after the commit. Should n rows
        of the journal share all of that, the first k are there when k are in the table. A
        `killed` row (replayed for a call still in flight) is there iff any row of that
        attempt is: the call was answered and committed before the kill.

        Results: the table holds one row per key, accumulated (cost, attempts, escalations
        add up over writes), whose other columns are those of the last write. Rows of one key
        are written in journal order, so the journal's rows for a key that are committed are
        a prefix of them, and the last committed one is the one that matches the table's row
        on (run, line, status, created_at): it and the rows before it are there, the rows
        after it are not. No match: none is (the table's row is older than the journal).
        Applying just the rows after the match adds exactly the missing costs once.
        """
        from .types import AttemptOutcome  # here: the edit stays inside this method

        a_seen = [False] * len(attempts)
        if attempts:
            idents: dict[tuple[Any, ...], list[int]] = {}
            for i, a in enumerate(attempts):
                killed = a.outcome == AttemptOutcome.KILLED
                start = None if killed else _utc(a.started_at).isoformat(sep=" ")
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
                    a_seen[k] = True
        r_seen = [False] * len(results)
        if results:
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
                created = None if r.created_at is None else _utc(r.created_at)
                if have[:3] == (r.run_id, r.line_no, str(r.status)) and (
                    created is None or have[3] == created
                ):
                    last[(r.job_name, r.record_key)] = i
            for i, r in enumerate(results):
                if i <= last.get((r.job_name, r.record_key), -1):
                    r_seen[i] = True
        return r_seen, a_seen

    # -- catalog cache --------------------------------------------------------------------

    def save_catalog(self, raw: bytes, fetched_at: datetime, source: str) -> None:
        """Keep `raw` (a /models response body) as the only cached catalogue."""
        with self._tx() as con:
            con.execute("DELETE FROM catalog_cache")
            con.execute(
                "INSERT INTO catalog_cache VALUES (?, ?, ?)", [_utc(fetched_at), source, raw]
            )

    def load_catalog(self) -> tuple[bytes, datetime] | None:
        """The last cached catalogue and when it was fetched (aware UTC), if any."""
        with self._tx() as con:
            row = con.execute(
                "SELECT raw, fetched_at FROM catalog_cache ORDER BY fetched_at DESC LIMIT 1"
            ).fetchone()
        if row is None:
            return None
        return bytes(row[0]), row[1].replace(tzinfo=UTC)

    # -- report ---------------------------------------------------------------------------

    def report(
        self, *, by: Sequence[str], since: datetime | None, job_name: str | None
    ) -> ReportData:
        """Spend, calls, tokens and outcomes grouped by `by` (subset of DIMENSIONS).

        Opens the file read-only, retrying briefly while a writer holds it.
        """
        dims = tuple(by)
        unknown = [d for d in dims if d not in _DIM_SQL]
        if unknown:
            raise ConfigError(
                f"unknown report dimension {unknown[0]!r}; choose from {', '.join(DIMENSIONS)}"
            )
        now = self._clock()
        today = now.astimezone(UTC).date()
        with self._tx(read_only=True) as con:
            if self._schema_version(con) == 0:
                raise StoreError(f"{self.path} is not a batchroute database (no schema)")
            groups = _report_groups(con, dims, since, job_name)
            totals = _report_groups(con, (), since, job_name)
            spent = _spent(con, today, job_name)
        return ReportData(
            by=dims,
            since=since,
            job_name=job_name,
            rows=tuple(groups),
            totals=totals[0] if totals else ReportRow(key=()),
            today=today,
            spent_today=spent,
            generated_at=now,
        )


def _apply_fixes(con: duckdb.DuckDBPyConnection, fixes: Sequence[CostFix]) -> int:
    """Fix reserved attempts (only while still 'reserved': a fix applies once), then make the
    affected records' cost the sum of their attempts again."""
    changed = 0
    recompute: set[tuple[str, str]] = set()
    for f in fixes:
        rows = con.execute(
            f"UPDATE attempts SET cost_usd = CAST(? AS {MONEY}), cost_source = ?, "
            f"usage_cost_usd = CAST(? AS {MONEY}), upstream_cost_usd = CAST(? AS {MONEY}) "
            "WHERE run_id = ? AND job_name = ? AND record_key = ? AND attempt_no = ? "
            "AND cost_source = ? RETURNING 1",
            [
                _money(f.cost_usd),
                f.cost_source,
                None if f.usage_cost_usd is None else _money(f.usage_cost_usd),
                None if f.upstream_cost_usd is None else _money(f.upstream_cost_usd),
                f.run_id,
                f.job_name,
                f.record_key,
                f.attempt_no,
                str(CostSource.RESERVED),
            ],
        ).fetchall()
        changed += len(rows)
        if rows and f.recompute_result:
            recompute.add((f.job_name, f.record_key))
    for job_name, key in recompute:
        con.execute(
            "UPDATE results SET cost_usd = (SELECT COALESCE(SUM(a.cost_usd), 0) FROM attempts a "
            "WHERE a.job_name = results.job_name AND a.record_key = results.record_key) "
            "WHERE job_name = ? AND record_key = ?",
            [job_name, key],
        )
    return changed


def _spent(con: duckdb.DuckDBPyConnection, day: date, job_name: str | None) -> Decimal:
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
        params.append(_utc(since))
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
