"""A lost-202 batch is adopted even when the list echoes its model in another form (audit5's
theory, reproduced by the lead).

When a POST /batches never answered, the next polls look for the batch it created in the
workspace's `GET /batches` (`runner/adopt.py`). A candidate was skipped unless its `model`
equalled the id we sent and its `request_counts.total` our item count. batch-api.md §7: the
API takes base and `:batch` ids (and answers 400 for one or the other per account), so the id
it echoes is not promised to be the one sent; and an OpenAI-shaped batch counts `total: 0`
while it validates. Skipped, the batch was abandoned after the adoption delay: its records went
again (paid twice) and its own bill was in no database. Whose a batch is, is proven by its
result lines' custom_ids (a hash of job and key), not by its model.

In-process run with an injected clock (the adoption delay is minutes) against the Batch API
stand-in on a loopback port, real DuckDB file.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest
from batch_standin import MODEL, BatchStandIn
from factories import batch_job, clocked_opts

from batchroute.runner import run_job_async
from batchroute.runner.work import utcnow
from batchroute.spec import load_spec

N = 6


@dataclass
class Echoes(BatchStandIn):
    """Batch objects as another shape of the API would show them: the model id in its other
    form (base ↔ `:batch`), and/or `request_counts.total` 0 until the batch is terminal."""

    other_form: bool = False
    zero_total: bool = False

    def _object(self, bid: str, status: str) -> dict[str, Any]:
        doc = super()._object(bid, status)
        if self.other_form:
            m = str(doc["model"])
            doc["model"] = m.removesuffix(":batch") if m.endswith(":batch") else f"{m}:batch"
        if self.zero_total and status not in ("completed", "failed", "expired", "cancelled"):
            doc["request_counts"] = {"total": 0, "completed": 0, "failed": 0}
        return doc


@pytest.mark.parametrize(
    ("shape", "polls"),
    [({"other_form": True}, 3), ({"zero_total": True}, 40)],  # 40: validating past the delay
    ids=["other-form", "zero-total"],
)
async def test_a_lost_202_batch_is_adopted_whatever_form_its_model_is_listed_in(
    tmp_path: Path, serve: Any, shape: dict[str, bool], polls: int
) -> None:
    """Before (eda75fe), both shapes: the intent abandoned ("its POST never landed"), no
    batch id in the database, its 6 records pending for the next run to send again, while
    the stand-in ran (and billed) the batch the lost POST created."""
    clock = [utcnow()]
    standin = Echoes(lose_202=1, polls_to_finish=polls, **shape)

    path = batch_job(tmp_path, MODEL, N)
    db = tmp_path / "results.duckdb"
    opts = clocked_opts(await serve(standin), db, clock)
    await run_job_async(load_spec(path), opts)
    con = duckdb.connect(str(db), read_only=True)
    try:
        booked = con.execute("SELECT COALESCE(SUM(cost_usd), 0) FROM attempts").fetchone()
        ids = [r[0] for r in con.execute("SELECT batch_id FROM batches").fetchall()]
        done = con.execute("SELECT count(*) FROM results WHERE status = 'done'").fetchone()
    finally:
        con.close()
    assert booked is not None
    assert done is not None
    assert len(standin.batches) == 1, f"the records were sent again: {list(standin.batches)}"
    assert ids == ["batch-0001"], ids
    assert done[0] == N
    assert standin.total > 0
    assert Decimal(booked[0]) >= standin.total, (booked[0], standin.total)
