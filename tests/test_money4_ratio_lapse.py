"""A learnt ratio does not lapse while the provider keeps billing above the list (money4).

`seed` made a run's start read, per model, the largest `cost_usd / reserved_usd` of the last
7 days' attempts. But a run seeded with a ratio reserves its calls at it, so they are billed
at or under their reservation and teach nothing: 7 days after the run that learnt a ratio it
lapsed, though every run since had been billed ~2.8x the list price, and one wave per model
overran the cap again (about weekly). Now each attempt keeps its list-price worst case
(`attempts.listed_usd`, migration 11) and the seed is cost / that.

Real CLI in a subprocess against a stand-in on a loopback port, real DuckDB file. Time is
injected through the file: a run's rows are moved back by whole days after it ends (its
attempts, its run row), as if it had run then; no process waits for a clock.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest
from subprocs import query
from test_audit_cost_above import ListedFree, PricedAbove
from test_seeded_ratios import _job, _run

from batchroute.runner.cost import learn_since
from batchroute.store import ResultStore
from batchroute.types import AttemptOutcome, AttemptRow, CostSource

CAP = Decimal("0.01")


def _days_back(db: Path, days: int) -> None:
    """Every run so far happened `days` days earlier than it did (UTC days)."""
    with duckdb.connect(str(db)) as con:
        con.execute(f"UPDATE attempts SET started_at = started_at - INTERVAL {days} DAY")
        con.execute(
            f"UPDATE runs SET started_at = started_at - INTERVAL {days} DAY, "
            f"finished_at = finished_at - INTERVAL {days} DAY"
        )


@pytest.mark.parametrize("listed", ["above", "free"])
async def test_a_ratio_stays_in_force_while_the_provider_keeps_billing_above_the_list(
    tmp_path: Path, serve: Any, listed: str
) -> None:
    """Run 1 (8 days ago) learns x2.8 (or a $0.005 floor) at list price; run 2 (5 days ago)
    is seeded with it, reserves at it and is billed at it; run 3 (today) has only run 2 in its
    7-day window. Before: run 2 taught nothing, so run 3 reserved its first wave at list price
    and the bill passed its cap (figures in the design notes). After: run 3 is seeded from
    run 2's calls too, reserves at the ratio, and the bill stays under the cap."""
    standin = (
        PricedAbove("ok", generation_known=False)
        if listed == "above"
        else ListedFree("ok", generation_known=False)
    )
    base_url = await serve(standin)
    db = tmp_path / "results.duckdb"
    await _run(_job(tmp_path, base_url, CAP))  # run 1: learns from its first wave
    assert query(db, "SELECT count(*) FROM results WHERE status = 'pending'")[0][0] > 0
    _days_back(db, 3)
    calls1 = len(standin.billed)
    err2 = await _run(_job(tmp_path, base_url, CAP))  # run 2: seeded by run 1 (3 days ago)
    assert "learnt" in err2, err2
    assert len(standin.billed) > calls1, f"run 2 sent nothing\n{err2}"
    _days_back(db, 5)  # run 1 is now 8 days old (out of the window), run 2 5 days old
    calls2 = len(standin.billed)
    run3_before = standin.total
    dearest = max(standin.billed)
    cap3 = dearest * Decimal("1.5")  # today's spend is 0: four calls fit at list, one at x2.8
    err3 = await _run(_job(tmp_path, base_url, cap3))
    assert len(standin.billed) > calls2, f"run 3 sent nothing: it proves nothing\n{err3}"
    bill3 = standin.total - run3_before
    booked = query(db, "SELECT sum(cost_usd) FROM attempts")[0][0]
    booked3 = query(db, "SELECT sum(cost_usd) FROM attempts WHERE started_at >= current_date")
    assert booked >= standin.total, (booked, standin.total)  # never under the bill
    assert booked3[0][0] >= bill3, (booked3, bill3)
    assert bill3 <= cap3, (bill3, cap3, len(standin.billed) - calls2, err3[-1500:])
    assert "learnt" in err3, err3


def _row(key: str, cost: str, reserved: str, listed: str | None, source: str) -> AttemptRow:
    return AttemptRow(
        "run1", "t", key, 1, "mid", "m/a", TODAY, 20, 200, AttemptOutcome.OK,
        cost_usd=Decimal(cost), cost_source=source, reserved_usd=Decimal(reserved),
        listed_usd=None if listed is None else Decimal(listed),
    )  # fmt: skip


TODAY = datetime(2026, 12, 7, 9, 0)


@pytest.mark.parametrize(
    ("row", "ratio"),
    [
        # reserved at x3 (0.003), billed x2.5 of the list: still x2.5 (was: nothing)
        (_row("a", "0.0025", "0.003", "0.001", CostSource.OPENROUTER), Decimal("2.5")),
        # a row older than migration 11: its reservation is the base, as before
        (_row("b", "0.0025", "0.001", None, CostSource.OPENROUTER), Decimal("2.5")),
        # booked at its reservation (outcome unknown): no bill, teaches nothing
        (_row("c", "0.003", "0.003", "0.001", CostSource.RESERVED), None),
        # at or under the list price: nothing to learn
        (_row("d", "0.001", "0.003", "0.001", CostSource.OPENROUTER), None),
    ],
)
def test_the_store_measures_a_ratio_against_the_list_price(
    tmp_path: Path, row: AttemptRow, ratio: Decimal | None
) -> None:
    store = ResultStore(tmp_path / "r.duckdb")
    store.migrate()
    store.write([], [row])
    state = store.resume_state(
        "t", final_statuses=[], day=TODAY.date(), scope=None, learn_since=learn_since(TODAY.date())
    )
    assert state.ratios == ({} if ratio is None else {"m/a": ratio})


def test_a_floor_stays_while_a_zero_listed_model_keeps_billing(tmp_path: Path) -> None:
    """Reserved at its $0.005 floor and billed $0.005: the list said $0, so it is a floor
    still (it was: cost = reservation, nothing)."""
    store = ResultStore(tmp_path / "r.duckdb")
    store.migrate()
    store.write([], [_row("a", "0.005", "0.005", "0", CostSource.OPENROUTER)])
    state = store.resume_state(
        "t", final_statuses=[], day=TODAY.date(), scope=None, learn_since=learn_since(TODAY.date())
    )
    assert (state.ratios, state.floors) == ({}, {"m/a": Decimal("0.005")})
