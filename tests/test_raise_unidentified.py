"""A run's last transaction raises the job's attempts booked at their reservation with no
generation id to what their model is known to bill (`store.fixes.raise_unidentified`).

Such a row (a call killed in flight before its headers, a timeout before them) can never be
asked about at GET /generation, and since money3 a reservation is no upper bound of a bill
above the list price. The end-to-end case is `tests/test_audit4_killed_above.py`; this one
pins the rule on a real DuckDB file: only those rows, only up, per model, records re-summed.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

from subprocs import query

from batchroute.store import ResultStore
from batchroute.types import AttemptOutcome, AttemptRow, CostSource, RunCounts, RunStatus

NOW = datetime(2026, 12, 7, 9, 0)


def _row(
    key: str, model: str, cost: str, listed: str | None, source: str, *,
    job: str = "t", gen: str | None = None, when: datetime = NOW,
) -> AttemptRow:  # fmt: skip
    return AttemptRow(
        "run1", job, key, 1, "mid", model, when, 20, None, AttemptOutcome.KILLED,
        cost_usd=Decimal(cost), cost_source=source, generation_id=gen,
        reserved_usd=Decimal(cost), listed_usd=None if listed is None else Decimal(listed),
    )  # fmt: skip


def _end(store: ResultStore, since: date | None) -> None:
    store.begin_run("run2", "t", "job.yaml", NOW, "test", migrate=False)
    store.end_run("run2", RunStatus.COMPLETED, RunCounts(), NOW, "t", since)


def test_unidentified_reserved_rows_rise_to_the_learnt_ratio_and_no_others(
    tmp_path: Path,
) -> None:
    db = tmp_path / "r.duckdb"
    store = ResultStore(db)
    store.migrate()
    taught = _row("a", "m/a", "0.004", "0.001", CostSource.OPENROUTER)  # x4 the list
    taught_b = _row("b", "m/b", "0.002", "0", CostSource.OPENROUTER)  # listed $0, billed
    store.write(
        [],
        [
            taught,
            taught_b,
            _row("k1", "m/a", "0.0018", "0.001", CostSource.RESERVED),  # -> 0.004
            _row("k2", "m/a", "0.0018", "0.001", CostSource.RESERVED, gen="g-2"),  # /generation's
            _row("k3", "m/a", "0.009", "0.001", CostSource.RESERVED),  # above already: stays
            _row("k4", "m/c", "0.0018", "0.001", CostSource.RESERVED),  # nothing learnt of m/c
            _row("k5", "m/b", "0.0001", "0", CostSource.RESERVED),  # -> the $0 model's floor
            _row("k6", "m/a", "0.0018", "0.001", CostSource.RESERVED, job="u"),  # another job
            _row("k7", "m/a", "0.0018", "0.001", CostSource.RESERVED, when=datetime(2026, 11, 1)),
        ],
    )
    _end(store, date(2026, 12, 1))
    got = dict(query(db, "SELECT job_name || '/' || record_key, cost_usd FROM attempts"))
    assert got == {
        "t/a": Decimal("0.004"),
        "t/b": Decimal("0.002"),
        "t/k1": Decimal("0.004"),
        "t/k2": Decimal("0.0018"),
        "t/k3": Decimal("0.009"),
        "t/k4": Decimal("0.0018"),
        "t/k5": Decimal("0.002"),
        "u/k6": Decimal("0.0018"),
        "t/k7": Decimal("0.0018"),  # before the window: its calls teach nothing either
    }
    sources = query(db, "SELECT DISTINCT cost_source FROM attempts WHERE record_key LIKE 'k%'")
    assert sources == [(str(CostSource.RESERVED),)]  # an estimate still: it may rise again


def test_without_a_window_nothing_is_raised(tmp_path: Path) -> None:
    """An older run's order (no `learn_since`) leaves the rows as they are."""
    db = tmp_path / "r.duckdb"
    store = ResultStore(db)
    store.migrate()
    store.write(
        [],
        [
            _row("a", "m/a", "0.004", "0.001", CostSource.OPENROUTER),
            _row("k1", "m/a", "0.0018", "0.001", CostSource.RESERVED),
        ],
    )
    _end(store, None)
    assert query(db, "SELECT cost_usd FROM attempts WHERE record_key = 'k1'") == [
        (Decimal("0.0018"),)
    ]
