"""The schema as numbered migrations, and the bookkeeping table that records which ran.

A migration, once released, never changes: a new column or table is a new migration at the end.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

import duckdb

from ..errors import StoreError
from .columns import MONEY

SCHEMA_VERSION_TABLE = "batchroute_migrations"


class Migration(NamedTuple):
    number: int
    name: str
    sql: str


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

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial schema", _M1_TABLES + _M1_VIEWS),
    Migration(2, "results.request_fp", "ALTER TABLE results ADD COLUMN request_fp VARCHAR;"),
    Migration(
        3,
        "catalog_cache",
        "CREATE TABLE catalog_cache (fetched_at TIMESTAMP NOT NULL, source VARCHAR, raw BLOB);",
    ),
    Migration(
        4,
        "attempts: reservation, usage.cost and BYOK upstream cost",
        f"ALTER TABLE attempts ADD COLUMN reserved_usd {MONEY};"
        f"ALTER TABLE attempts ADD COLUMN usage_cost_usd {MONEY};"
        f"ALTER TABLE attempts ADD COLUMN upstream_cost_usd {MONEY};",
    ),
    Migration(
        5,
        "runs.records_duplicate",
        "ALTER TABLE runs ADD COLUMN records_duplicate BIGINT NOT NULL DEFAULT 0;",
    ),
    Migration(6, "results.arm: routing experiments", "ALTER TABLE results ADD COLUMN arm VARCHAR;"),
    # Issue 11, resume at scale. Reserved number: 9 (7 is report's views, 8 batchlane's
    # batches table); numbered 7 on its branch only because the numbers must run 1, 2, 3, …:
    # renumber to 9 at merge. Assumes nothing of 7 or 8.
    Migration(
        7,
        "results.line_fp: the input line under the prompt, so resume skips it unparsed",
        "ALTER TABLE results ADD COLUMN line_fp BIGINT;",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)
if [m.number for m in MIGRATIONS] != list(range(1, SCHEMA_VERSION + 1)):
    raise AssertionError("migrations must be numbered 1, 2, 3, … in order")  # pragma: no cover


def _tables(con: duckdb.DuckDBPyConnection) -> set[str]:
    rows = con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'"
    ).fetchall()
    return {r[0] for r in rows}


def schema_version(con: duckdb.DuckDBPyConnection, path: Path) -> int:
    """The version recorded in the open database `path` (0 for an empty file).

    Raises StoreError for a file that is not a batchroute database, or one written by a
    newer batchroute.
    """
    tables = _tables(con)
    if SCHEMA_VERSION_TABLE not in tables:
        if tables:
            raise StoreError(
                f"{path} is not a batchroute database (it has tables "
                f"{', '.join(sorted(tables)[:5])} but no {SCHEMA_VERSION_TABLE})"
            )
        return 0
    row = con.execute(f"SELECT COALESCE(MAX(version), 0) FROM {SCHEMA_VERSION_TABLE}").fetchone()
    version = int(row[0]) if row else 0
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{path} has schema version {version}, newer than this batchroute "
            f"knows ({SCHEMA_VERSION}); upgrade batchroute"
        )
    return version


def migrate(con: duckdb.DuckDBPyConnection, path: Path, now: Callable[[], datetime]) -> None:
    """Apply the migrations `path` has not had yet, inside the caller's transaction.

    `now()` (naive UTC) is recorded as each migration's applied_at.
    """
    version = schema_version(con, path)
    if version == 0:
        con.execute(
            f"CREATE TABLE {SCHEMA_VERSION_TABLE} (version INTEGER PRIMARY KEY, "
            "name VARCHAR NOT NULL, applied_at TIMESTAMP NOT NULL)"
        )
    for migration in MIGRATIONS[version:]:
        con.execute(migration.sql)
        con.execute(
            f"INSERT INTO {SCHEMA_VERSION_TABLE} VALUES (?, ?, ?)",
            [migration.number, migration.name, now()],
        )
