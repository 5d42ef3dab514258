"""ResultStore against real DuckDB files: migrations, upsert accumulation, exact money, resume."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchroute.errors import ConfigError, StoreError
from batchroute.store import SCHEMA_VERSION, ResultStore
from batchroute.types import (
    AttemptOutcome,
    AttemptRow,
    RecordStatus,
    ResultRow,
    RunCounts,
    RunStatus,
)

T0 = datetime(2026, 11, 3, 12, 0, tzinfo=UTC)


def result(
    key: str, *, job: str = "j", run: str = "r1", cost: str = "0", **kw: object
) -> ResultRow:
    fields: dict[str, object] = {"status": RecordStatus.DONE, "attempts": 1, "line_no": 1}
    fields.update(kw)
    return ResultRow(
        job_name=job,
        record_key=key,
        run_id=run,
        cost_usd=Decimal(cost),
        **fields,  # type: ignore[arg-type]
    )


def attempt(
    key: str, *, job: str = "j", run: str = "r1", cost: str = "0", at: datetime = T0, **kw: object
) -> AttemptRow:
    fields: dict[str, object] = {
        "attempt_no": 1,
        "tier": "mid",
        "model": "openai/gpt-4o-mini",
        "latency_ms": 100,
        "http_status": 200,
        "outcome": AttemptOutcome.OK,
    }
    fields.update(kw)
    return AttemptRow(
        run_id=run,
        job_name=job,
        record_key=key,
        started_at=at,
        cost_usd=Decimal(cost),
        **fields,  # type: ignore[arg-type]
    )


@pytest.fixture
def store(tmp_path: Path) -> ResultStore:
    s = ResultStore(tmp_path / "results.duckdb", clock=lambda: T0)
    s.migrate()
    return s


def sql(store: ResultStore, query: str) -> list[tuple[object, ...]]:
    with duckdb.connect(str(store.path), read_only=True) as con:
        return con.execute(query).fetchall()


def test_migrate_fresh_creates_schema_and_is_idempotent(store: ResultStore) -> None:
    store.migrate()
    store.migrate()
    rows = sql(store, "SELECT version, name FROM batchroute_migrations ORDER BY version")
    assert [r[0] for r in rows] == list(range(1, SCHEMA_VERSION + 1))
    names = {r[0] for r in sql(store, "SELECT table_name FROM information_schema.tables")}
    for t in ("runs", "results", "attempts", "catalog_cache", "daily_spend", "cost_by_day",
              "cost_by_model", "cost_by_tier", "cost_by_task", "run_summary", "fallback_rates",
              "latency_by_model"):  # fmt: skip
        assert t in names
    cols = {r[0]: r[1] for r in sql(store, "DESCRIBE results")}
    assert cols["cost_usd"] == "DECIMAL(38,12)"
    assert cols["request_fp"] == "VARCHAR"
    for view in ("cost_by_model", "run_summary", "fallback_rates", "latency_by_model"):
        sql(store, f"SELECT * FROM {view}")  # every view is valid SQL


def test_migrate_upgrades_an_older_file(tmp_path: Path) -> None:
    s = ResultStore(tmp_path / "db.duckdb")
    s.migrate()
    with duckdb.connect(str(s.path)) as con:
        con.execute("DROP TABLE catalog_cache")
        for view in ("calls", "savings", "failures", "arms"):  # migration 7
            con.execute(f"DROP VIEW {view}")
        con.execute("DROP TABLE baselines")
        for col in ("reserved_usd", "usage_cost_usd", "upstream_cost_usd"):
            con.execute(f"ALTER TABLE attempts DROP COLUMN {col}")
        con.execute("ALTER TABLE runs DROP COLUMN records_duplicate")
        con.execute("ALTER TABLE results DROP COLUMN arm")
        con.execute("DROP TABLE batches")  # migration 8
        con.execute("ALTER TABLE results DROP COLUMN line_fp")  # migration 9
        con.execute("ALTER TABLE attempts DROP COLUMN listed_usd")  # migration 11
        for col in ("served_model", "served_listed_usd"):  # migration 12
            con.execute(f"ALTER TABLE attempts DROP COLUMN {col}")
        con.execute("DROP TABLE generation_gaps")
        con.execute("DELETE FROM batchroute_migrations WHERE version >= 3")
    assert s.schema_version() == 2
    s.migrate()
    assert s.schema_version() == SCHEMA_VERSION
    assert s.load_catalog() is None


def test_migrate_refuses_foreign_duckdb_file(tmp_path: Path) -> None:
    path = tmp_path / "other.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE customers (id INTEGER)")
    with pytest.raises(StoreError, match="not a batchroute database"):
        ResultStore(path).migrate()
    with pytest.raises(StoreError, match="not a batchroute database"):
        ResultStore(path).report(by=(), since=None, job_name=None)


def test_migrate_refuses_newer_schema(store: ResultStore) -> None:
    with duckdb.connect(str(store.path)) as con:
        con.execute("INSERT INTO batchroute_migrations VALUES (99, 'future', now())")
    with pytest.raises(StoreError, match="newer"):
        store.migrate()


def test_not_a_duckdb_file_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello, not a database\n" * 100)
    with pytest.raises(StoreError):
        ResultStore(path).migrate()


def test_write_upsert_accumulates_cost_attempts_escalations(store: ResultStore) -> None:
    store.write([result("a", cost="0.1", status=RecordStatus.FAILED, escalations=1,
                        error_type="timeout")], [attempt("a", cost="0.1")])  # fmt: skip
    store.write(
        [result("a", run="r2", cost="0.25", attempts=2, output="hi", request_fp="fp2")],
        [attempt("a", run="r2", cost="0.05"), attempt("a", run="r2", attempt_no=2, cost="0.2")],
    )
    rows = sql(store, "SELECT run_id, status, cost_usd, attempts, escalations, output, "
                      "error_type, request_fp FROM results")  # fmt: skip
    assert rows == [("r2", "done", Decimal("0.35"), 3, 1, "hi", None, "fp2")]
    total = sql(store, "SELECT SUM(cost_usd) FROM attempts")[0][0]
    assert total == rows[0][2]


def test_write_dedupes_a_key_repeated_in_one_batch(store: ResultStore) -> None:
    store.write(
        [result("k", cost="1", output="first"), result("k", cost="2", output="second"),
         result("other", cost="5")],
        [],
    )  # fmt: skip
    rows = sql(store, "SELECT record_key, cost_usd, attempts, output FROM results ORDER BY 1")
    assert rows == [("k", Decimal(3), 2, "second"), ("other", Decimal(5), 1, None)]


def test_write_keeps_strings_safe_and_enums_as_values(store: ResultStore) -> None:
    nasty = 'Robert\'); DROP TABLE results;-- "quoted" \n ünïcode 🎉 \x01'
    store.write([result(nasty, output=nasty)], [attempt(nasty, error_message=nasty)])
    rows = sql(store, "SELECT record_key, output, status FROM results")
    assert rows == [(nasty, nasty, "done")]
    assert sql(store, "SELECT outcome, error_message FROM attempts") == [("ok", nasty)]


def test_write_converts_aware_timestamps_to_utc(store: ResultStore) -> None:
    from zoneinfo import ZoneInfo

    local = datetime(2026, 11, 3, 1, 30, tzinfo=ZoneInfo("America/New_York"))
    store.write([result("a", created_at=local)], [attempt("a", at=local)])
    assert sql(store, "SELECT started_at FROM attempts")[0][0] == datetime(2026, 11, 3, 6, 30)
    assert sql(store, "SELECT created_at FROM results")[0][0] == datetime(2026, 11, 3, 6, 30)


money_st = st.decimals(
    min_value=Decimal(0), max_value=Decimal("1000000"), places=12, allow_nan=False,
    allow_infinity=False,
)  # fmt: skip


@settings(
    max_examples=20,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(costs=st.lists(money_st, min_size=1, max_size=20))
def test_decimal_costs_sum_back_exactly(store: ResultStore, costs: list[Decimal]) -> None:
    job = uuid.uuid4().hex  # examples share the file; each uses its own job
    store.write(
        [result("same", job=job, cost=str(c)) for c in costs],
        [attempt("same", job=job, attempt_no=i, cost=str(c)) for i, c in enumerate(costs)],
    )
    got = sql(
        store,
        f"SELECT (SELECT cost_usd FROM results WHERE job_name = '{job}'), "
        f"(SELECT SUM(cost_usd) FROM attempts WHERE job_name = '{job}')",
    )
    assert got == [(sum(costs), sum(costs))]


def test_tiny_cost_round_trips_exactly(store: ResultStore) -> None:
    c = Decimal("0.000001148945")
    store.write([result("a", cost=str(c))], [attempt("a", cost=str(c)), attempt("b", cost="1E-7")])
    assert sql(store, "SELECT cost_usd FROM results")[0][0] == c
    assert store.spent_on(T0.date(), job_name=None) == c + Decimal("1E-7")


def test_final_keys_bulk_and_filtered(store: ResultStore) -> None:
    n = 20_000
    statuses = [RecordStatus.DONE, RecordStatus.FAILED, RecordStatus.INVALID, RecordStatus.PENDING]
    store.write(
        [result(f"k{i}", status=statuses[i % 4], request_fp=f"fp{i}") for i in range(n)]
        + [result("x", job="other")],
        [],
    )
    t = time.perf_counter()
    keys = store.final_keys("j", statuses={RecordStatus.DONE})
    assert time.perf_counter() - t < 1.0
    assert len(keys) == n // 4
    assert keys["k0"] == "fp0"
    final = store.final_keys("j", statuses=[RecordStatus.DONE, RecordStatus.FAILED,
                                            RecordStatus.INVALID])  # fmt: skip
    assert len(final) == 3 * n // 4
    assert "k3" not in final
    assert store.final_keys("j", statuses=()) == {}
    assert store.final_keys("nope", statuses={RecordStatus.DONE}) == {}


def test_spent_on_by_day_and_scope(store: ResultStore) -> None:
    day = T0.date()
    store.write(
        [],
        [
            attempt("a", job="j", cost="0.5", at=datetime(2026, 11, 3, 0, 0, tzinfo=UTC)),
            attempt("b", job="k", cost="0.25", at=datetime(2026, 11, 3, 23, 59, 59, tzinfo=UTC)),
            attempt("c", job="j", cost="7", at=datetime(2026, 11, 4, 0, 0, tzinfo=UTC)),
            attempt("d", job="j", cost="9", at=datetime(2026, 11, 2, 23, 59, 59, tzinfo=UTC)),
        ],
    )
    assert store.spent_on(day, job_name=None) == Decimal("0.75")
    assert store.spent_on(day, job_name="j") == Decimal("0.5")
    assert store.spent_on(day, job_name="k") == Decimal("0.25")
    assert store.spent_on(date(2026, 1, 1), job_name=None) == Decimal(0)
    view = dict(
        ((r[1], r[0]), r[2])
        for r in sql(store, "SELECT day, scope, cost_usd FROM daily_spend")  # type: ignore[misc]
    )
    assert view[("*", day)] == Decimal("0.75")
    assert view[("j", day)] == Decimal("0.5")


def test_runs_lifecycle_and_stale_runs(store: ResultStore) -> None:
    store.start_run("r1", "j", "jobs/j.yaml", T0, "0.1.0")
    store.start_run("r2", "j", "jobs/j.yaml", T0, "0.1.0")
    store.write([result("a", run="r1")], [attempt("a", run="r1", cost="0.3",
                                                  at=T0 + timedelta(minutes=5))])  # fmt: skip
    counts = RunCounts(seen=3, done=1, failed=1, invalid=1, pending=0, cost_usd=Decimal("0.3"))
    store.finish_run("r2", RunStatus.COMPLETED, counts, T0 + timedelta(hours=1))
    assert store.close_stale_runs() == 1
    assert store.close_stale_runs() == 0
    rows = sql(store, "SELECT run_id, status, finished_at, cost_usd, records_seen FROM runs "
                      "ORDER BY run_id")  # fmt: skip
    assert rows == [
        ("r1", "interrupted", datetime(2026, 11, 3, 12, 5), Decimal("0.3"), 0),
        ("r2", "completed", datetime(2026, 11, 3, 13, 0), Decimal("0.3"), 3),
    ]
    with pytest.raises(StoreError):
        store.start_run("r1", "j", "x", T0, "0.1.0")


def test_a_run_begins_in_one_transaction_migrate_close_stale_and_start(tmp_path: Path) -> None:
    """The run's start (issue 11): one commit for migrate, close_stale_runs and start_run, on a
    kept DuckDB instance as the runner uses it; stale runs are closed before this one starts,
    and a start that fails closes nothing."""
    store = ResultStore(tmp_path / "fresh.duckdb", keep_instance=True)
    assert store.begin_run("r1", "j", "jobs/j.yaml", T0, "0.1.0", migrate=True) == 0
    assert store.schema_version() == SCHEMA_VERSION
    assert store.begin_run("r2", "j", "jobs/j.yaml", T0, "0.1.0", migrate=True) == 1
    with pytest.raises(StoreError):  # r1 exists: the whole transaction is rolled back
        store.begin_run("r1", "j", "jobs/j.yaml", T0, "0.1.0", migrate=False)
    rows = sql(store, "SELECT run_id, status FROM runs ORDER BY run_id")
    assert rows == [("r1", "interrupted"), ("r2", "running")]


def test_a_kept_instance_takes_transactions_from_several_threads(tmp_path: Path) -> None:
    """The run's own store keeps one DuckDB instance (issue 11), and the run calls it from
    worker threads (`asyncio.to_thread`), two at once when two batch tiers save their batches:
    each transaction must still open, commit and close on its own."""
    from concurrent.futures import ThreadPoolExecutor

    store = ResultStore(tmp_path / "kept.duckdb", keep_instance=True, write_timeout=30)
    store.migrate()

    def start(i: int) -> None:
        store.start_run(f"r{i}", "j", "jobs/j.yaml", T0, "0.1.0")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(start, range(64)))
    assert sql(store, "SELECT count(*) FROM runs") == [(64,)]


def test_catalog_cache_round_trip(store: ResultStore) -> None:
    assert store.load_catalog() is None
    store.save_catalog(b'{"data": []}', T0 - timedelta(days=1), "https://x/models")
    store.save_catalog(b'{"data": [1]}\x00\xff', T0, "https://x/models")
    assert store.load_catalog() == (b'{"data": [1]}\x00\xff', T0)
    assert sql(store, "SELECT COUNT(*) FROM catalog_cache") == [(1,)]


def test_report_missing_file_and_bad_dimension(tmp_path: Path, store: ResultStore) -> None:
    with pytest.raises(StoreError, match="no such database"):
        ResultStore(tmp_path / "missing.duckdb").report(by=(), since=None, job_name=None)
    with pytest.raises(ConfigError, match="unknown report dimension"):
        store.report(by=["colour"], since=None, job_name=None)


_HOLDER = """
import duckdb, sys, time
con = duckdb.connect(sys.argv[1])
con.execute("SELECT 1")
print("open", flush=True)
time.sleep(float(sys.argv[2]))
con.close()
"""


def test_report_while_writer_holds_file_retries_then_clear_error(store: ResultStore) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(store.path), "30"], stdout=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "open"
        slow = ResultStore(store.path, read_timeout=0.3, write_timeout=0.3)
        t = time.perf_counter()
        with pytest.raises(StoreError, match=f"locked by process {proc.pid}"):
            slow.report(by=["day"], since=None, job_name=None)
        assert time.perf_counter() - t >= 0.3
        with pytest.raises(StoreError, match="locked"):
            slow.write([result("a")], [])
        proc.kill()


def test_report_waits_for_a_short_flush(store: ResultStore) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(store.path), "0.3"], stdout=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "open"
        data = ResultStore(store.path, read_timeout=10).report(by=(), since=None, job_name=None)
        assert data.totals.calls == 0


def test_write_falls_back_when_json_cannot_encode(store: ResultStore) -> None:
    """Values orjson refuses (a lone surrogate, an int beyond 64 bits) still get written."""
    store.write([result("sur", output="bad \ud800 text", cost="0.5")], [])
    store.write([result("nul", output="a\x00b")], [attempt("nul", error_message="x\x00y")])
    rows = sql(store, "SELECT record_key, output, cost_usd FROM results ORDER BY 1")
    assert rows == [("nul", "a\x00b", Decimal(0)), ("sur", "bad ? text", Decimal("0.5"))]
