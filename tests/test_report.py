"""Report rendering: exact money, formats, parsing, and JSON totals equal to direct SQL sums."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import orjson
import pytest

from batchroute.errors import ConfigError
from batchroute.report import money, parse_by, parse_since, render
from batchroute.store import ResultStore
from batchroute.types import AttemptOutcome, AttemptRow, RecordStatus, ResultRow

NOW = datetime(2026, 11, 3, 12, 0, tzinfo=UTC)
YESTERDAY = NOW - timedelta(days=1)


def _res(job: str, key: str, status: RecordStatus, tier: str, task: str, cost: str,
         at: datetime, tokens: tuple[int, int] | None = None) -> ResultRow:  # fmt: skip
    return ResultRow(
        job_name=job, record_key=key, run_id=f"run-{job}", line_no=1, status=status,
        task_type=task, tier=tier, model_requested="m/req", model_served="m/" + tier,
        prompt_tokens=tokens[0] if tokens else None,
        completion_tokens=tokens[1] if tokens else None,
        cost_usd=Decimal(cost), attempts=1, created_at=at,
    )  # fmt: skip


def _att(job: str, key: str, tier: str, cost: str, at: datetime, n: int = 1) -> AttemptRow:
    return AttemptRow(
        run_id=f"run-{job}", job_name=job, record_key=key, attempt_no=n, tier=tier,
        model="m/" + tier, started_at=at, latency_ms=120, http_status=200,
        outcome=AttemptOutcome.OK, cost_usd=Decimal(cost),
    )  # fmt: skip


@pytest.fixture
def store(tmp_path: Path) -> ResultStore:
    s = ResultStore(tmp_path / "rep.duckdb", clock=lambda: NOW)
    s.migrate()
    s.write(
        [
            _res("a", "1", RecordStatus.DONE, "mid", "translation", "0.000001148945", NOW, (10, 5)),
            _res("a", "2", RecordStatus.FAILED, "budget", "classification", "0.3", YESTERDAY),
            _res("a", "3", RecordStatus.INVALID, "budget", "classification", "0", NOW),
            _res("b", "1", RecordStatus.PENDING, "premium", "deep_reasoning", "0", NOW),
            _res("b", "2", RecordStatus.DONE, "premium", "deep_reasoning", "1.1", NOW, (7, 3)),
        ],
        [
            _att("a", "1", "mid", "0.000001148945", NOW),
            _att("a", "2", "budget", "0.1", YESTERDAY),
            _att("a", "2", "budget", "0.2", YESTERDAY, 2),
            _att("b", "2", "premium", "1.1", NOW),
        ],
    )
    return s


def _sql(store: ResultStore, q: str, params: list[object] | None = None) -> tuple[object, ...]:
    with duckdb.connect(str(store.path), read_only=True) as con:
        row = con.execute(q, params or []).fetchone()
    assert row is not None
    return row


@pytest.mark.parametrize(
    ("since", "job"), [(None, None), (None, "a"), (NOW - timedelta(hours=1), None)]
)
@pytest.mark.parametrize("by", [(), ("day",), ("tier", "model"), ("task", "job", "run")])
def test_json_totals_equal_direct_sql(
    store: ResultStore, by: tuple[str, ...], since: datetime | None, job: str | None
) -> None:
    doc = orjson.loads(render(store.report(by=by, since=since, job_name=job), "json"))
    cut = (since or datetime(1970, 1, 1, tzinfo=UTC)).replace(tzinfo=None)
    a_where = "started_at >= ? AND (? IS NULL OR job_name = ?)"
    calls, cost = _sql(store, f"SELECT COUNT(*), SUM(cost_usd) FROM attempts WHERE {a_where}",
                       [cut, job, job])  # fmt: skip
    r_where = "created_at >= ? AND (? IS NULL OR job_name = ?)"
    r = _sql(
        store,
        "SELECT COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0), "
        + ", ".join(f"COUNT(*) FILTER (WHERE status = '{s}')" for s in RecordStatus)
        + f" FROM results WHERE {r_where}",
        [cut, job, job],
    )
    totals = doc["totals"]
    assert totals["calls"] == calls
    assert Decimal(totals["cost_usd"]) == (cost or 0)
    assert (totals["prompt_tokens"], totals["completion_tokens"]) == r[:2]
    assert [totals["records"][str(s)] for s in RecordStatus] == list(r[2:])
    # the rows add up to the totals, exactly
    assert sum(Decimal(row["cost_usd"]) for row in doc["rows"]) == Decimal(totals["cost_usd"])
    assert sum(row["calls"] for row in doc["rows"]) == totals["calls"]
    today = _sql(
        store,
        "SELECT COALESCE(SUM(cost_usd), 0) FROM attempts WHERE CAST(started_at AS DATE) = ? "
        "AND (? IS NULL OR job_name = ?)",
        [NOW.date(), job, job],
    )[0]
    assert Decimal(doc["today"]["cost_usd"]) == today


def test_table_prints_money_by_magnitude_and_csv_exactly(store: ResultStore) -> None:
    data = store.report(by=["tier"], since=None, job_name=None)
    table = render(data, "table")
    assert "0.000001148945" in table  # below $0.0001: all 12 decimals, never 0.00 or 1E-6
    assert "TOTAL" in table
    assert "spent today (2026-11-03 UTC, whole database): $1.10\n" in table
    rows = list(csv.DictReader(io.StringIO(render(data, "csv"))))
    assert [r["tier"] for r in rows] == ["budget", "mid", "premium", "*"]
    assert rows[-1]["cost_usd"] == "1.400001148945"
    assert rows[0]["invalid"] == "1"
    plain = render(store.report(by=(), since=None, job_name="b"), "table")
    assert "job b" in plain
    assert "1.10" in plain


def test_empty_database_reports_zeros(tmp_path: Path) -> None:
    s = ResultStore(tmp_path / "e.duckdb", clock=lambda: NOW)
    s.migrate()
    doc = orjson.loads(render(s.report(by=["day"], since=None, job_name=None), "json"))
    assert doc["rows"] == []
    assert doc["totals"]["cost_usd"] == "0.00"
    assert doc["today"]["cost_usd"] == "0.00"


@pytest.mark.parametrize(
    ("value", "text"),
    [("0", "0.00"), ("1.5", "1.50"), ("0.000001148945", "0.000001148945"),
     ("10.000000000000", "10.00"), ("1E+2", "100.00"), ("1E-12", "0.000000000001")],
)  # fmt: skip
def test_money_is_exact(value: str, text: str) -> None:
    assert money(Decimal(value)) == text


def test_parse_since() -> None:
    assert parse_since("7d", NOW) == NOW - timedelta(days=7)
    assert parse_since("12h", NOW) == NOW - timedelta(hours=12)
    assert parse_since("30m", NOW) == NOW - timedelta(minutes=30)
    assert parse_since("2026-11-01", NOW) == datetime(2026, 11, 1, tzinfo=UTC)
    assert parse_since("2026-11-01T05:00:00+01:00", NOW) == datetime(2026, 11, 1, 4, tzinfo=UTC)
    with pytest.raises(ConfigError, match="--since"):
        parse_since("last week", NOW)


def test_parse_by_and_bad_format(store: ResultStore) -> None:
    assert parse_by("day, tier,model") == ("day", "tier", "model")
    with pytest.raises(ConfigError, match="--by"):
        parse_by("day,colour")
    with pytest.raises(ConfigError, match="--format"):
        render(store.report(by=(), since=None, job_name=None), "xml")
