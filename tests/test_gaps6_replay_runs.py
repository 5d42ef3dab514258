"""Every replay step keeps a run's `runs.cost_usd` equal to the sum of its attempts (gaps6).

A run's rows can reach the file in more than one replay: the start after a kill replays the
journal files it finds, and a file that appears after that start (restored by hand, or a
segment a dead run's writer process was still busy with) comes in at a later start. Here the
two steps are made by hand (no CLI night was found that makes them on its own).
Before (4fb9e65): the first step gave a run with no
`runs` row one costing what that step held (gaps5's lost run) and `ON CONFLICT DO NOTHING`
left it there at the next step; a run closed `interrupted` by a start kept the cost it was
closed at. `runs` and `run_summary` said less than `attempts`: less than the bill.

Real parts: journal files written by the real `Journal`, replayed by the start's own
`recover_journal` into a real DuckDB file.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from subprocs import query
from test_journal_replay import _journal, _store, attempt, result

from batchroute.runner.recover import recover_journal
from batchroute.types import RecordStatus


def _runs(db: Path) -> list[tuple[object, ...]]:
    return query(db, "SELECT run_id, cost_usd, attempts_cost_usd FROM run_summary ORDER BY 1")


def _journal_rows(db: Path, key: str, costs: list[str], run: str) -> None:
    """A run's journal with `key`'s attempts at `costs`, its last row pending."""
    j = _journal(db)
    for no, cost in enumerate(costs, 1):
        j.append(attempt(key, no, cost, run=run))
    j.append(result(key, RecordStatus.PENDING, cost=str(sum(map(Decimal, costs))), run=run))
    j.close()


def test_a_lost_run_replayed_in_two_steps_costs_all_its_attempts(tmp_path: Path) -> None:
    """Before: run `lost` had $0.003 in `runs` and $0.010 in `attempts` after step 2."""
    store, db = _store(tmp_path)
    _journal_rows(db, "a", ["0.001", "0.002"], "lost")
    assert recover_journal(store) == 1  # step 1: the run gets its row
    assert _runs(db) == [("lost", Decimal("0.003"), Decimal("0.003"))]
    _journal_rows(db, "b", ["0.007"], "lost")
    assert recover_journal(store) == 1  # step 2: more of its calls
    assert _runs(db) == [("lost", Decimal("0.010"), Decimal("0.010"))]
    assert recover_journal(store) == 0  # nothing left: nothing moves
    assert _runs(db) == [("lost", Decimal("0.010"), Decimal("0.010"))]


def test_a_run_closed_interrupted_gets_the_attempts_a_later_replay_adds(tmp_path: Path) -> None:
    """A killed run's row, closed `interrupted` at the next start at what the file held, then
    a replay of more of its calls. Before: $0.001 in `runs` against $0.005 in `attempts`."""
    store, db = _store(tmp_path)
    store.start_run("killed", "t", "job.yaml", attempt("x", 1).started_at, "test")
    store.write([], [attempt("a", 1, "0.001", run="killed")])
    assert store.close_stale_runs() == 1
    _journal_rows(db, "b", ["0.004"], "killed")
    recover_journal(store)
    assert _runs(db) == [("killed", Decimal("0.005"), Decimal("0.005"))]
    status = query(db, "SELECT status FROM runs")
    assert status == [("interrupted",)]


def test_a_running_run_keeps_its_row_for_its_own_end(tmp_path: Path) -> None:
    """A row still `running` (its process is the one that ends it, or `close_stale` will)
    is not summed by a replay: its end writes its cost, fixes included (`fixes._resum`)."""
    store, db = _store(tmp_path)
    store.start_run("live", "t", "job.yaml", attempt("x", 1).started_at, "test")
    _journal_rows(db, "a", ["0.004"], "live")
    recover_journal(store)
    assert query(db, "SELECT status, cost_usd FROM runs") == [("running", Decimal("0"))]
