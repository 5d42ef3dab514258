"""The writer process's fast path (`batchroute.writer.apply_segment`: journal fields straight
to columns, new keys inserted plainly, existing ones upserted) writes exactly what the row path
(`ResultStore.write` of `read_segment`) writes, on real DuckDB files and real journals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb

from batchroute.journal import Journal, read_segment
from batchroute.store import ResultStore
from batchroute.types import (
    AttemptOutcome,
    AttemptRow,
    CostFix,
    CostSource,
    RecordStatus,
    ResultRow,
)
from batchroute.writer import apply_segment

T0 = datetime(2026, 5, 1, 12, 0, 0, 123456)


def _attempt(key: str, n: int, outcome: AttemptOutcome, cost: str, **kw: Any) -> AttemptRow:
    return AttemptRow(
        "run1", "t", key, n, "mid", "m", kw.pop("started", T0), 20, 200, outcome, None, None,
        Decimal(cost), kw.pop("source", CostSource.OPENROUTER), kw.pop("gen", None),
        Decimal("0.01"), **kw,
    )  # fmt: skip


def _result(key: str, line: int, **kw: Any) -> ResultRow:
    base: dict[str, Any] = {"created_at": T0, "tier": "mid", "cost_usd": Decimal("0.001")}
    return ResultRow("t", key, "run1", line, kw.pop("status", RecordStatus.DONE), **{**base, **kw})


def _segment(db: Path, rows: list[Any]) -> Path:
    j = Journal(db)
    j.open()
    for row in rows:
        j.append(row)
    seg = j.rotate_segment()
    j.close()
    assert seg is not None
    return seg


def _dump(db: Path) -> tuple[list[Any], list[Any]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        r = con.execute("SELECT * FROM results ORDER BY ALL").fetchall()
        a = con.execute("SELECT * FROM attempts ORDER BY ALL").fetchall()
    finally:
        con.close()
    return r, a


def _both(tmp_path: Path, earlier: list[Any], rows: list[Any]) -> None:
    """Apply `rows` after `earlier` with the fast path in one file and the row path in another;
    the two files must hold the same rows."""
    dumps = []
    for name, fast in (("fast", True), ("rows", False)):
        d = tmp_path / name
        d.mkdir()
        db = d / "r.duckdb"
        store = ResultStore(db, clock=lambda: datetime(2026, 5, 2, tzinfo=UTC))
        store.migrate()
        if earlier:
            store.write(*read_segment(_segment(db, earlier)))
        seg = _segment(db, rows)
        if fast:
            apply_segment(store, seg)
        else:
            store.write(*read_segment(seg))
        dumps.append(_dump(db))
    assert dumps[0] == dumps[1]
    assert dumps[0][0], "nothing was written"


def test_the_fast_path_writes_what_the_row_path_writes(tmp_path: Path) -> None:
    plus2 = timezone(timedelta(hours=2))
    at2 = datetime(2026, 5, 1, 14, tzinfo=plus2)  # an aware time: stored as 12:00 UTC
    rows: list[Any] = [
        _attempt("a", 1, AttemptOutcome.IN_FLIGHT, "0.01"),  # never written by the run
        _attempt("a", 1, AttemptOutcome.OK, "0.00000001", gen="g1"),  # money in E notation
        _result("a", 1, cost_usd=Decimal("1E-8"), output="bonjour", generation_id="g1"),
        _attempt("b", 1, AttemptOutcome.FAILED, "0", started=at2),
        _result("b", 2, status=RecordStatus.FAILED, created_at=at2),
        _result("c", 3, status=RecordStatus.INVALID, created_at=None, cost_usd=Decimal(0)),
        _attempt("d", 1, AttemptOutcome.OK, "0.01", source=CostSource.RESERVED, gen="g4"),
        _result("d", 4, cost_usd=Decimal("0.01")),
        CostFix("run1", "t", "d", 1, Decimal("0.002"), "generation", generation_id="g4"),
    ]
    _both(tmp_path, [], rows)


def test_existing_keys_accumulate_and_keep_their_answer(tmp_path: Path) -> None:
    """A rerun's rows for keys the table holds: upserted (cost and attempts add up; a row
    without an answer keeps the paid one), beside new keys inserted plainly."""
    earlier = [_result("a", 1, output="paid answer"), _result("b", 2)]
    later = [
        _result("a", 1, status=RecordStatus.PENDING, output=None),
        _result("c", 3, output="new"),
    ]
    _both(tmp_path, earlier, later)


def test_a_key_repeated_in_one_segment_is_combined(tmp_path: Path) -> None:
    _both(tmp_path, [], [_result("a", 1, output="x"), _result("a", 5, output=None)])
