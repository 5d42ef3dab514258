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
from .views import M13_DAILY_SPEND

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

# Migration 7 (issue 13): what reports and the README's SQL cookbook read. A call is credited to
# the model that served it (a native_fallback tier's answer may come from the chain's second
# model), with the model it asked for beside it; a call without an answer, to the model asked.
# The savings views' first part (migrations 7 and 10): each record's final tokens priced at its
# run's baseline model, else the job's latest one; each view goes on with its own columns.
_PRICED = """WITH latest AS (
        SELECT * FROM baselines
        QUALIFY row_number() OVER (PARTITION BY job_name ORDER BY recorded_at DESC) = 1),
    priced AS (
        SELECT r.*, COALESCE(b.model, l.model) AS baseline_model,
               CASE WHEN r.prompt_tokens IS NOT NULL AND r.completion_tokens IS NOT NULL
                    AND COALESCE(b.model, l.model) IS NOT NULL
                    THEN r.prompt_tokens * COALESCE(b.prompt_usd, l.prompt_usd)
                         + r.completion_tokens * COALESCE(b.completion_usd, l.completion_usd)
                         + COALESCE(b.request_usd, l.request_usd) END AS baseline_usd"""

_M7_VIEWS = f"""
CREATE TABLE baselines (
    run_id VARCHAR PRIMARY KEY, job_name VARCHAR NOT NULL, tier VARCHAR NOT NULL,
    model VARCHAR NOT NULL, prompt_usd {MONEY} NOT NULL, completion_usd {MONEY} NOT NULL,
    request_usd {MONEY} NOT NULL, recorded_at TIMESTAMP NOT NULL);
CREATE VIEW calls AS
    SELECT a.run_id, a.job_name, a.record_key, a.attempt_no, a.tier, a.model AS model_requested,
           CASE WHEN r.model_served IS NOT NULL AND (a.generation_id = r.generation_id
                     OR (a.outcome = 'ok' AND a.run_id = r.run_id))
                THEN r.model_served ELSE a.model END AS model,
           a.started_at, CAST(a.started_at AS DATE) AS day, a.latency_ms, a.http_status,
           a.outcome, a.error_type, a.error_message, a.cost_usd, a.cost_source, r.task_type, r.arm
    FROM attempts a LEFT JOIN results r USING (job_name, record_key);
CREATE VIEW savings AS
    {_PRICED}
        FROM results r LEFT JOIN baselines b ON b.run_id = r.run_id
             LEFT JOIN latest l ON l.job_name = r.job_name)
    SELECT job_name, record_key, run_id, CAST(created_at AS DATE) AS day, task_type, tier, arm,
           COALESCE(model_served, model_requested) AS model, status, prompt_tokens,
           completion_tokens, attempts, escalations, cost_usd, baseline_model, baseline_usd,
           CAST(baseline_usd - cost_usd AS {MONEY}) AS saved_usd
    FROM priced;
CREATE OR REPLACE VIEW fallback_rates AS
    SELECT job_name, tier, model_requested AS model, COUNT(*) AS calls,
           COUNT(*) FILTER (WHERE outcome = 'ok') AS ok,
           COUNT(*) FILTER (WHERE outcome = 'retry') AS retried,
           COUNT(*) FILTER (WHERE outcome = 'fallback') AS fell_back,
           COUNT(*) FILTER (WHERE outcome = 'ok' AND model <> model_requested) AS served_by_other,
           COUNT(*) FILTER (WHERE outcome = 'escalate') AS escalated,
           COUNT(*) FILTER (WHERE outcome = 'failed') AS failed,
           (COUNT(*) FILTER (WHERE outcome = 'fallback')
            + COUNT(*) FILTER (WHERE outcome = 'ok' AND model <> model_requested))
               / COUNT(*) AS fallback_rate
    FROM calls GROUP BY ALL;
CREATE OR REPLACE VIEW latency_by_model AS
    SELECT model, COUNT(*) AS calls, AVG(latency_ms) AS avg_ms,
           quantile_cont(latency_ms, 0.5) AS p50_ms, quantile_cont(latency_ms, 0.95) AS p95_ms,
           quantile_cont(latency_ms, 0.99) AS p99_ms, MAX(latency_ms) AS max_ms
    FROM calls WHERE latency_ms > 0 GROUP BY ALL;
CREATE VIEW failures AS
    SELECT error_type, COUNT(*) AS calls, COUNT(DISTINCT (job_name, record_key)) AS records,
           string_agg(DISTINCT model, ', ' ORDER BY model) AS models,
           arg_max(error_message, started_at) AS sample_message,
           MIN(started_at) AS first_seen, MAX(started_at) AS last_seen, SUM(cost_usd) AS cost_usd
    FROM calls WHERE error_type IS NOT NULL GROUP BY ALL;
CREATE VIEW arms AS
    WITH per_arm AS (
        SELECT job_name, arm, COUNT(*) AS records,
               COUNT(*) FILTER (WHERE status = 'done') AS done,
               COUNT(*) FILTER (WHERE status = 'failed') AS failed,
               COUNT(*) FILTER (WHERE status = 'invalid') AS invalid,
               COUNT(*) FILTER (WHERE escalations > 0) AS escalated,
               SUM(attempts) AS calls, SUM(cost_usd) AS cost_usd
        FROM results WHERE arm IS NOT NULL GROUP BY ALL),
    quality AS (
        SELECT job_name, arm, COUNT(*) AS quality_failures FROM calls
        WHERE arm IS NOT NULL
          AND error_type IN ('empty_content', 'finish_length', 'invalid_json')
        GROUP BY ALL)
    SELECT p.*, CAST(p.cost_usd / p.records AS {MONEY}) AS cost_per_record,
           p.failed / p.records AS failure_rate, p.escalated / p.records AS escalation_rate,
           COALESCE(q.quality_failures, 0) AS quality_failures
    FROM per_arm p LEFT JOIN quality q USING (job_name, arm);
"""
_M8_BATCHES = f"""
CREATE TABLE batches (
    batch_key VARCHAR PRIMARY KEY, batch_id VARCHAR, job_name VARCHAR NOT NULL,
    run_id VARCHAR NOT NULL, tier VARCHAR NOT NULL, model VARCHAR NOT NULL,
    status VARCHAR NOT NULL, round INTEGER NOT NULL DEFAULT 1,
    request_count INTEGER NOT NULL, items VARCHAR NOT NULL,
    intent_at TIMESTAMP NOT NULL, submitted_at TIMESTAMP, finished_at TIMESTAMP,
    collected_at TIMESTAMP, reserved_usd {MONEY} NOT NULL, settled_usd {MONEY},
    error_message VARCHAR);
"""
"""One row per Batch API submission, written as an `intent` *before* the POST (batch_key is
ours, known before OpenRouter's batch_id), so a kill -9 never loses a batch nor sends it twice.
`items` is JSON: per record its key, line, custom_id and the classification its row needs."""

_M10_LANE = f"""
CREATE OR REPLACE VIEW calls AS
    WITH c AS (
        SELECT a.run_id, a.job_name, a.record_key, a.attempt_no, a.tier,
               a.model AS model_requested,
               regexp_replace(CASE WHEN r.model_served IS NOT NULL
                                   AND (a.generation_id = r.generation_id
                                        OR (a.outcome = 'ok' AND a.run_id = r.run_id))
                              THEN r.model_served ELSE a.model END, ':batch$', '') AS model,
               a.started_at, CAST(a.started_at AS DATE) AS day, a.latency_ms, a.http_status,
               a.outcome, a.error_type, a.error_message, a.cost_usd, a.cost_source, r.task_type,
               r.arm, CASE WHEN a.attempt_no = 0 THEN 'batch' ELSE 'sync' END AS lane
        FROM attempts a LEFT JOIN results r USING (job_name, record_key))
    SELECT *, (outcome = 'ok' AND model <> regexp_replace(model_requested, ':batch$', ''))
                  AS served_by_other
    FROM c;
CREATE OR REPLACE VIEW savings AS
    {_PRICED},
               CASE WHEN EXISTS (
                        SELECT 1 FROM attempts a
                        WHERE a.job_name = r.job_name AND a.record_key = r.record_key
                          AND a.run_id = r.run_id AND a.attempt_no = 0 AND a.outcome = 'ok')
                    THEN 'batch' ELSE 'sync' END AS lane
        FROM results r LEFT JOIN baselines b ON b.run_id = r.run_id
             LEFT JOIN latest l ON l.job_name = r.job_name)
    SELECT job_name, record_key, run_id, CAST(created_at AS DATE) AS day, task_type, tier, arm,
           regexp_replace(COALESCE(model_served, model_requested), ':batch$', '') AS model,
           status, prompt_tokens, completion_tokens, attempts, escalations, cost_usd,
           baseline_model, baseline_usd, CAST(baseline_usd - cost_usd AS {MONEY}) AS saved_usd,
           lane
    FROM priced;
CREATE OR REPLACE VIEW fallback_rates AS
    SELECT job_name, tier, model_requested AS model, COUNT(*) AS calls,
           COUNT(*) FILTER (WHERE outcome = 'ok') AS ok,
           COUNT(*) FILTER (WHERE outcome = 'retry') AS retried,
           COUNT(*) FILTER (WHERE outcome = 'fallback') AS fell_back,
           COUNT(*) FILTER (WHERE served_by_other) AS served_by_other,
           COUNT(*) FILTER (WHERE outcome = 'escalate') AS escalated,
           COUNT(*) FILTER (WHERE outcome = 'failed') AS failed,
           (COUNT(*) FILTER (WHERE outcome = 'fallback')
            + COUNT(*) FILTER (WHERE served_by_other)) / COUNT(*) AS fallback_rate
    FROM calls GROUP BY ALL;
CREATE OR REPLACE VIEW latency_by_model AS
    SELECT model, COUNT(*) AS calls, AVG(latency_ms) AS avg_ms,
           quantile_cont(latency_ms, 0.5) AS p50_ms, quantile_cont(latency_ms, 0.95) AS p95_ms,
           quantile_cont(latency_ms, 0.99) AS p99_ms, MAX(latency_ms) AS max_ms
    FROM calls WHERE latency_ms > 0 AND lane = 'sync' GROUP BY ALL;
"""
"""Migration 10: the batch lane in reports. A batch call is credited to the model that served
it without the `:batch` variant's suffix (answered items named the base model, failed ones the
id sent: one model in two rows), `model_requested` stays the id as sent, and `lane` ('batch':
attempt_no 0, else 'sync') tells the lanes apart; `served_by_other` no longer counts every
answered batch call as a fallback. A batch call's latency is its queue time: kept out of
`latency_by_model`."""


_M12_SERVED = f"""
ALTER TABLE attempts ADD COLUMN served_model VARCHAR;
ALTER TABLE attempts ADD COLUMN served_listed_usd {MONEY};
CREATE OR REPLACE VIEW calls AS
    WITH c AS (
        SELECT a.run_id, a.job_name, a.record_key, a.attempt_no, a.tier,
               a.model AS model_requested,
               regexp_replace(COALESCE(a.served_model,
                              CASE WHEN r.model_served IS NOT NULL
                                   AND (a.generation_id = r.generation_id
                                        OR (a.outcome = 'ok' AND a.run_id = r.run_id))
                              THEN r.model_served ELSE a.model END), ':batch$', '') AS model,
               a.started_at, CAST(a.started_at AS DATE) AS day, a.latency_ms, a.http_status,
               a.outcome, a.error_type, a.error_message, a.cost_usd, a.cost_source, r.task_type,
               r.arm, CASE WHEN a.attempt_no = 0 THEN 'batch' ELSE 'sync' END AS lane
        FROM attempts a LEFT JOIN results r USING (job_name, record_key))
    SELECT *, (outcome = 'ok' AND model <> regexp_replace(model_requested, ':batch$', ''))
                  AS served_by_other
    FROM c;
CREATE TABLE generation_gaps (
    base_url VARCHAR PRIMARY KEY, proven_at TIMESTAMP NOT NULL, generation_id VARCHAR NOT NULL,
    generation_started_at TIMESTAMP NOT NULL, http_status INTEGER NOT NULL);
"""
"""Migration 12 (gaps5): each attempt keeps the model its answer names (`served_model`, NULL
when no answer came) and, for a native fallback's answer, that model's own list-price worst
case (`served_listed_usd`): the next start's ratio seed learns the bill under the model that
served (`store.ratios`), and `calls` credits every paid answer to it, not only the record's
last (a fallback's answer that failed a quality check was credited to the model asked for).
`generation_gaps`: the base URLs proven to have no GET /generation, with the proof (an id the
endpoint gave, when its call started, the status the GET got): later runs do not ask it."""

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
    Migration(7, "report views: calls, savings (+ baselines), failures, arms", _M7_VIEWS),
    Migration(8, "batches: the Batch API lane (issue 14)", _M8_BATCHES),
    # Issue 11, resume at scale.
    Migration(
        9,
        "results.line_fp: the input line under the prompt, so resume skips it unparsed",
        "ALTER TABLE results ADD COLUMN line_fp BIGINT;",
    ),
    Migration(
        10, "report views: the batch lane (calls.lane, served model without :batch)", _M10_LANE
    ),
    # money4: a learnt cost ratio is measured against this, not the (raised) reservation, so
    # a run reserved at the ratio and billed at it keeps it alive (`store.ratios`).
    Migration(
        11,
        "attempts.listed_usd: a call's worst case at list prices, before learnt ratios",
        f"ALTER TABLE attempts ADD COLUMN listed_usd {MONEY};",
    ),
    # gaps5: with native fallbacks another model serves and bills; the next start's ratio
    # seed learns under it, against its own list-price worst case (`store.ratios`).
    Migration(
        12,
        "attempts.served_model, served_listed_usd; calls credits the model that served; "
        "generation_gaps",
        _M12_SERVED,
    ),
    # gaps6: a batch still out is committed spend; SQL clients of the view now see it too.
    Migration(
        13,
        "daily_spend: cost_usd = spent_usd + batches_out_usd (batches still out)",
        M13_DAILY_SPEND,
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
