"""The `daily_spend` view counts batches still out, as `report` and the run's start do (gaps6).

A submitted batch cannot be cancelled (batch-api.md §6): its spend is committed at the POST
and billed when it runs, whether or not a run has collected it. Since stop 24 `report` counts
it today at its reservation (audit5); the view any SQL client reads summed `attempts` only:
$0.00 for a day whose batch the provider had billed. Migration 13 redefines the view: its
`cost_usd` is what counts against that day's cap (`spent_usd`, the attempts, plus
`batches_out_usd`, the reservations of that day's batches not collected yet); once a run
collects the batch, its items' attempts carry the bill and its reservation leaves the view.

Real CLI in subprocesses against a stand-in on a loopback port, real DuckDB files.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
from batch_standin import BatchStandIn
from subprocs import query, run_cli, run_cli_async
from test_audit5_report_batch_out import _job, batch_out_and_billed

from batchroute.store import SCHEMA_VERSION

VIEW = "SELECT scope, cost_usd FROM daily_spend WHERE day = ? ORDER BY scope"

# Migration 1's view, as a file migrated up to 12 has it.
_OLD_VIEW = """
CREATE OR REPLACE VIEW daily_spend AS
    SELECT CAST(started_at AS DATE) AS day, job_name AS scope, SUM(cost_usd) AS cost_usd
    FROM attempts GROUP BY ALL
    UNION ALL
    SELECT CAST(started_at AS DATE) AS day, '*' AS scope, SUM(cost_usd) AS cost_usd
    FROM attempts GROUP BY ALL;
"""


def _today() -> Any:
    return datetime.now(UTC).date()


async def test_daily_spend_counts_a_batch_still_out_then_its_bill_once(
    tmp_path: Path, serve: Any
) -> None:
    """Before (4fb9e65): no row for today at all (no attempt yet) while the provider had
    billed the batch; after: today's `cost_usd` covers the bill for the job and for '*', and
    once the next run has collected it the view is the attempts' sum (no double count)."""
    standin, job = await batch_out_and_billed(tmp_path, serve)
    billed = standin.total
    db = tmp_path / "results.duckdb"
    ((reserved,),) = query(db, "SELECT reserved_usd FROM batches")
    day = _today()
    rows = query(db, VIEW, [day])
    assert [r[0] for r in rows] == ["*", "t"], rows
    assert all(r[1] >= billed for r in rows), (rows, billed, reserved)
    parts = query(db, "SELECT spent_usd, batches_out_usd FROM daily_spend WHERE scope = '*'")
    assert parts == [(Decimal(0), reserved)], parts

    standin.polls_to_finish = 0  # the next GET says so
    code, err = await run_cli_async("run", str(job))  # collects it
    assert code == 0, err
    ((spent,),) = query(db, "SELECT sum(cost_usd) FROM attempts")
    assert spent >= billed
    assert query(db, VIEW, [day]) == [("*", spent), ("t", spent)]
    assert query(db, "SELECT sum(batches_out_usd) FROM daily_spend") == [(Decimal(0),)]


async def test_a_file_before_migration_13_is_read_and_then_migrated(
    tmp_path: Path, serve: Any
) -> None:
    """A file at version 12 (the old view) with a batch out: a dry run, which does not
    migrate, quotes as before and leaves the file at 12; the next `report` migrates it, and
    the view then counts the batch."""
    standin = BatchStandIn(polls_to_finish=1_000_000)
    job = _job(tmp_path, await serve(standin))
    code, err = await run_cli_async("run", str(job))
    assert code == 7, err
    db = tmp_path / "results.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute(_OLD_VIEW)
        con.execute("DELETE FROM batchroute_migrations WHERE version >= 13")
    assert query(db, VIEW, [_today()]) == []  # the old view: the batch is nowhere
    proc = run_cli("run", str(job), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert query(db, "SELECT max(version) FROM batchroute_migrations") == [(12,)]
    proc = run_cli("report", str(db))
    assert proc.returncode == 0, proc.stderr
    assert query(db, "SELECT max(version) FROM batchroute_migrations") == [(SCHEMA_VERSION,)]
    ((reserved,),) = query(db, "SELECT reserved_usd FROM batches")
    assert query(db, VIEW, [_today()]) == [("*", reserved), ("t", reserved)]
