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
from typing import cast

from batchroute.budget import Budget
from batchroute.client import OpenRouterClient
from batchroute.errors import UpstreamError
from batchroute.journal import Journal
from batchroute.plan import WorkItem
from batchroute.progress import Progress
from batchroute.runner.book import Book
from batchroute.runner.reconcile import Reconciler, Unsettled
from batchroute.runner.work import Call, Trail, utcnow
from batchroute.store import ResultStore
from batchroute.types import (
    AttemptOutcome,
    Classification,
    CostSource,
    GenerationCost,
    Record,
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
    journal.close()
