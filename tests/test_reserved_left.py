"""What a run says of its calls booked at a reservation: the tier rows of the progress block move
with a later /generation fix, and the end note counts every call left at its reservation.

Both were wrong once: a fix landing after the record's row was booked moved the run's total but
not its tier's cost (a `mid` row above the run's total); and the note counted only the calls the
reconciler gave up on, not the timeouts without a generation id (5 such rows, note said 0).
"""

from __future__ import annotations

import io
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import duckdb
from factories import make_spec, texts, write_jsonl

from batchroute.budget import Budget
from batchroute.client import OpenRouterClient
from batchroute.errors import UpstreamError
from batchroute.journal import Journal
from batchroute.plan import WorkItem
from batchroute.progress import Progress
from batchroute.report import reserved_line
from batchroute.runner import RunOptions, run_job_async
from batchroute.runner.book import Book
from batchroute.runner.reconcile import Reconciler, Unsettled
from batchroute.runner.work import Call, Trail, utcnow
from batchroute.simulator import Scenario, SimulatorThread
from batchroute.store import ResultStore
from batchroute.types import (
    AttemptOutcome,
    Classification,
    CostSource,
    GenerationCost,
    Record,
    RunStatus,
)

MINI = "openai/gpt-4o-mini"


async def _no_sleep(_s: float) -> None:
    return None


async def test_a_late_generation_fix_moves_the_tier_row_with_the_total(tmp_path: Path) -> None:
    db = tmp_path / "results.duckdb"
    store = ResultStore(db)
    store.migrate()
    journal = Journal(db)
    journal.open()
    book = Book(store, journal, run_id="r1", job_name="t", now=utcnow)
    progress = Progress(
        ["mid"], bars=False, quiet=True, stream=io.StringIO(), counts=lambda: book.counts
    )
    book.progress = progress
    item = WorkItem(
        Record(1, "a", {"text": "x"}), [], "fp", Classification("t", "c", "job.task"), "mid",
        False, 10,
    )  # fmt: skip
    progress.routed("mid")
    reserved = Decimal("0.0100")
    # The call timed out after the provider started it: booked at its reservation, with an id.
    err = UpstreamError("timed out", model=MINI, error_type="timeout")
    call = Call(MINI, datetime.now(UTC), 0, reserved, CostSource.RESERVED, error=err,
                reserved=reserved, generation_id="gen-1")  # fmt: skip
    trail = Trail(attempts=1, cost=reserved)
    book.attempt(item, "mid", 1, call, AttemptOutcome.FAILED)
    book.failed(item, "mid", trail)  # the record's row is booked before the fix comes
    budget = Budget(Decimal(10), spent=reserved)
    # The reconciler's own booking of what /generation said (its poll is what is not tested).
    rec = Reconciler(cast(OpenRouterClient, None), budget, book, sleep=_no_sleep,
                     on_change=lambda: None)  # fmt: skip
    unsettled = Unsettled("gen-1", "r1", "t", "a", 1, reserved, trail, "mid")
    rec._apply(unsettled, GenerationCost(Decimal("0.002")), Decimal("0.0020"))
    run, mid = progress.rows()
    assert run.cost == book.counts.cost_usd == Decimal("0.0020")
    assert mid.label == "mid"
    assert mid.cost == run.cost  # was $0.0100: the tier row kept the reservation
    assert (book.reserved_left, book.reserved_left_id) == (0, 0)
    journal.close()


def _q(db: Path, sql: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


async def test_the_end_note_counts_timeouts_without_an_id_as_the_report_does(
    tmp_path: Path,
) -> None:
    write_jsonl(tmp_path / "in.jsonl", texts(4))
    spec = make_spec(
        tmp_path,
        tiers={"mid": [MINI]},
        request={"max_tokens": 64},
        quality=[],
        limits={"concurrency": 4, "timeout_s": 0.3, "max_attempts": 3, "reconcile_wait_s": 0},
        budget={"daily_usd": "10"},
    )
    # A call that hangs past the timeout has no generation id; a malformed answer has one, but
    # /generation does not know it before the run ends. Both stay at their reservation.
    scenario = Scenario.from_dict({"hang_s": 3, "generation_delay_s": 3600}).with_script(
        {"*": ["hang", "malformed", "ok"]}
    )
    db = tmp_path / "results.duckdb"
    logs: list[str] = []
    with SimulatorThread(scenario, seed=0) as sim:
        report = await run_job_async(
            spec,
            RunOptions(api_key="sk-or-v1-test", db_path=db, handle_signals=False, quiet=True,
                       sleep=_no_sleep, jitter_seed=0, log=logs.append,
                       base_url=sim.base_url),
        )  # fmt: skip
    assert report.status is RunStatus.COMPLETED
    ((left, with_id),) = _q(
        db,
        "SELECT COUNT(*), COUNT(generation_id) FROM attempts WHERE cost_source = 'reserved'",
    )
    assert (left, with_id) == (2, 1)  # the timeout and the malformed answer
    note = next(n for n in report.notes if "stay booked at it" in n)
    assert f"; {left} stay booked at it" in note, note  # said 1: the timeout was not counted
    tail = (
        "the next run asks /generation again for 1 call; 1 call has no generation id and "
        "stays booked at its reservation (an overcount, never an undercount)"
    )
    assert note.endswith(tail), note
    # `batchroute report` says the same of the same rows.
    store = ResultStore(db)
    line = reserved_line(store.report(by=[], since=None, job_name=None))
    assert line is not None
    assert line.endswith(tail), line
