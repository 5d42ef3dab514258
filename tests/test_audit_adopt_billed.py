"""A lost-202 batch that was billed is not abandoned because one GET failed (money3).

When a POST /batches never answered, the next polls look for the batch it may have created
(`runner/adopt.py`). A finished candidate without result lines is adopted if it was billed
(`_billed`, a GET of the batch): booking a bill that may be another job's overcounts, leaving a
paid batch of ours in no database undercounts. `_billed` took a failed GET (a 503 on a bad
night) for "not billed": past the adoption delay the intent was abandoned, its records went
again, and the paid batch was in no database.

In-process run with an injected clock (the adoption delay is minutes) against the Batch API
stand-in on a loopback port, real DuckDB file.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
from aiohttp import web
from batch_standin import MODEL, BatchStandIn
from factories import batch_job, clocked_opts

from batchroute.runner import run_job_async
from batchroute.runner.work import utcnow
from batchroute.spec import load_spec

FLAKY_FOR = timedelta(seconds=400)  # past the 120 s adoption delay, and its next poll


@dataclass
class FlakyGets(BatchStandIn):
    """Every second GET of a batch answers 503 until `until` (on the run's clock): the look-up
    of its result lines succeeds, the look-up of its bill right after it fails."""

    clock: list[datetime] | None = None
    until: datetime | None = None
    gets: int = 0
    failed: int = 0

    async def get(self, request: web.Request) -> web.Response:
        assert self.clock is not None
        assert self.until is not None
        self.gets += 1
        if self.clock[0] < self.until and self.gets % 2 == 0:
            self.failed += 1
            err = {"code": 503, "message": "Service temporarily unavailable"}
            return web.json_response({"error": err}, status=503)
        return await super().get(request)


async def test_a_failed_get_does_not_abandon_a_billed_batch(tmp_path: Path, serve: Any) -> None:
    """Before: abandoned at the first adoption look past 120 s: its bill ($0.000579 for the
    3 items it ran) in no database (DuckDB $0), its records left for the next run. After:
    adopted once the GETs answer, its items resubmitted: $0.001745 billed and booked."""
    clock = [utcnow()]
    standin = FlakyGets(
        lose_202=1, expire=1, expire_answered=3, hide_expired=True,
        clock=clock, until=clock[0] + FLAKY_FOR,
    )  # fmt: skip

    path = batch_job(tmp_path, MODEL, 6)
    db = tmp_path / "results.duckdb"
    opts = clocked_opts(await serve(standin), db, clock)
    await run_job_async(load_spec(path), opts)
    assert standin.failed > 0, "no GET failed: the test proves nothing"
    first = Decimal(standin.batches["batch-0001"]["usage"]["cost"])
    assert first > 0
    con = duckdb.connect(str(db), read_only=True)
    try:
        row = con.execute("SELECT COALESCE(SUM(cost_usd), 0) FROM attempts").fetchone()
        ids = [r[0] for r in con.execute("SELECT batch_id FROM batches").fetchall()]
    finally:
        con.close()
    assert "batch-0001" in ids, ids
    assert row is not None
    assert Decimal(row[0]) >= standin.total, (row[0], standin.total)
