"""One 404 for a batch long after its submit is not taken for a batch that is gone (audit5's
theory, reproduced by the lead).

`runner/poll.py` books a batch "gone" (at its reservation, its records sent again) when
GET /batches/{id} answers 404 more than an hour after the submit: deleted by hand, or a key of
another workspace, either of which the list no longer shows. A single transient 404 (a bad
night's load balancer) was taken for that: the records were paid again through the synchronous
chain while the batch ran on and was billed, and its answers were never read. Now the 404 is
checked against the workspace's list: a batch the list still shows is polled again.

In-process run with an injected clock (the wait is over an hour) against the Batch API
stand-in on a loopback port, real DuckDB file.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from aiohttp import web
from batch_standin import BatchStandIn
from factories import clocked_opts
from test_batch_lane import _finish_all, _job, _money, _statuses

from batchroute.runner import run_job_async
from batchroute.runner.work import utcnow
from batchroute.spec import load_spec
from batchroute.store import ResultStore

N = 5


@dataclass
class OneBlip(BatchStandIn):
    """The first GET of a batch after `after` (on the run's clock) answers 404 once."""

    clock: list[datetime] | None = None
    after: datetime | None = None
    blips: int = 0

    async def get(self, request: web.Request) -> web.Response:
        assert self.clock is not None
        assert self.after is not None
        if not self.blips and self.clock[0] > self.after:
            self.blips += 1
            bid = request.match_info["id"]
            err = {"code": 404, "message": f"Batch job {bid} not found."}
            return web.json_response({"error": err}, status=404)
        return await super().get(request)


async def test_one_404_an_hour_after_the_submit_does_not_send_the_records_again(
    tmp_path: Path, serve: Any
) -> None:
    """Before (6c24097): the batch booked 'gone' at its reservation and its 5 records sent
    through the synchronous chain (paid twice: the batch ran on and billed them too)."""
    clock = [utcnow()]
    standin = OneBlip(polls_to_finish=30, clock=clock, after=clock[0] + timedelta(minutes=61))

    job = _job(tmp_path, N)
    db = tmp_path / "results.duckdb"
    opts = clocked_opts(await serve(standin), db, clock)
    await run_job_async(load_spec(job), opts)
    assert standin.blips == 1, "no GET answered 404 past the hour: the test proves nothing"
    assert standin.sync_calls == 0, "the records were paid again through the sync chain"
    assert _statuses(db) == {"done": N}
    (row,) = ResultStore(db).batches()
    assert row.status == "collected"
    _finish_all(standin)
    booked, _ = _money(db)
    assert booked >= standin.total > Decimal(0)
