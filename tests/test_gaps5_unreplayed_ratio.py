"""A killed run's unreplayed journal teaches its ratios too (gaps5).

A run started while a reader holds the database (read-only) cannot replay the journal a
killed run left: it counts that journal's calls toward today's spend (`Replayed.spent`), but
its ratio seed (`store.ratios`) read only the database. A model the killed run had learnt to
bill above its list price was reserved at list price again: the run's first wave overran the
cap. The database itself misses no bill (the journal is applied once the reader lets go).

Real CLI in subprocesses against a stand-in on a loopback port, real DuckDB file, a real
read-only reader process.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from subprocs import ENV, query, run_cli, until
from test_audit_cost_above import PricedAbove
from test_billing_standin import MODEL
from test_reader_before_start import holding, let_go
from test_seeded_ratios import CAP1, CONCURRENCY, _job, _run

from batchroute.store import ResultStore


def _ok_lines(db: Path) -> int:
    """Answered calls in the journal files beside `db` (what a kill leaves)."""
    n = 0
    for path in db.parent.glob(db.name + ".journal*"):
        with contextlib.suppress(FileNotFoundError):
            n += sum(1 for line in path.read_bytes().splitlines()
                     if line.startswith(b"a{") and b'"outcome":"ok"' in line)  # fmt: skip
    return n


async def test_a_run_beside_a_reader_is_seeded_from_the_unreplayed_journal(
    tmp_path: Path, serve: Any
) -> None:
    """Run 1 (cap $0.01, a reader holding the file all along) is billed ~2.8x its list price
    per call, journals every answer and is killed: nothing of it is in the database. Run 2,
    beside the same reader, may spend 1.5 of the dearest call more. Before: its first wave
    went out at list price and the bill passed its cap. After: reserved at the ratio run 1's
    journal teaches, one call fits."""
    standin = PricedAbove("ok", generation_known=False)
    base_url = await serve(standin)
    db = tmp_path / "results.duckdb"
    ResultStore(db).migrate()
    job = _job(tmp_path, base_url, CAP1)
    with holding(db, "ro") as holder:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "batchroute", "run", str(job), env=ENV,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        try:
            await until(
                lambda: _ok_lines(db) >= CONCURRENCY and _ok_lines(db) == len(standin.billed),
                "run 1's first wave answered and journaled",
            )
        finally:
            proc.kill()
            await proc.wait()
        assert query(db, "SELECT count(*) FROM attempts") == [(0,)]  # all in the journal
        dry = await asyncio.to_thread(run_cli, "run", str(job), "--dry-run")
        assert "learnt cost ratios" in dry.stdout, dry.stdout  # the quote knows it too
        assert f"{MODEL} x2." in dry.stdout, dry.stdout
        calls1 = len(standin.billed)
        cap2 = standin.total + max(standin.billed) * Decimal("1.5")
        run2 = asyncio.ensure_future(_run(_job(tmp_path, base_url, cap2)))
        await until(lambda: len(standin.billed) > calls1 or run2.done(), "run 2's first call")
        await asyncio.to_thread(let_go, holder)
        err = await run2
    assert "open read-only" in err, err
    booked = query(db, "SELECT sum(cost_usd) FROM attempts")[0][0]
    assert len(standin.billed) > calls1, f"run 2 sent nothing: it proves nothing\n{err}"
    assert booked >= standin.total, (booked, standin.total)
    assert standin.total <= cap2, (standin.total, cap2, len(standin.billed) - calls1, err)


def test_the_journal_rule_agrees_with_the_stores(tmp_path: Path) -> None:
    """`ratios.learnt_from` (rows not written yet) reads what `ratios.learnt` reads from the
    same rows once written: ratios, floors, the window, a reserved row, a fallback's model."""
    import duckdb

    from batchroute.store.ratios import learnt, learnt_from
    from batchroute.types import AttemptOutcome, AttemptRow, CostSource

    day = datetime(2026, 12, 7, 9, 0)

    def call(key: str, model: str, at: datetime, cost: str, listed: str, **kw: Any) -> AttemptRow:
        return AttemptRow(
            "run1", "t", key, 1, "mid", model, at, 20, 200, AttemptOutcome.OK,
            cost_usd=Decimal(cost), cost_source=kw.pop("source", CostSource.OPENROUTER),
            reserved_usd=Decimal(listed), listed_usd=Decimal(listed), **kw,
        )  # fmt: skip

    rows = [
        call("a", "m/a", day, "0.003", "0.001"),
        call("b", "m/a", day, "0.0070001", "0.002"),
        call("c", "m/a", day - timedelta(days=1), "0.1", "0.001"),  # before the window
        call("d", "m/b", day, "0.009", "0.001", source=CostSource.RESERVED),
        call("e", "m/c", day, "0.005", "0"),
        call(
            "f",
            "m/d",
            day,
            "0.004",
            "0.002",
            served_model="m/e",
            served_listed_usd=Decimal("0.001"),
        ),
    ]
    store = ResultStore(tmp_path / "r.duckdb")
    store.migrate()
    store.write([], rows)
    con = duckdb.connect(str(tmp_path / "r.duckdb"))
    try:
        from_db = learnt(con, day.date())
    finally:
        con.close()
    assert learnt_from(rows, day.date(), ({}, {})) == from_db
    assert from_db == (
        {"m/a": Decimal("3.501"), "m/d": Decimal(2), "m/e": Decimal(4)},
        {"m/c": Decimal("0.005")},
    )
