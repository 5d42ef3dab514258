"""A call that waited for its model's slot is reserved at what was learnt while it waited
(review3).

`Sender.call` priced a call's reservation before waiting for its model's own slot
(`per_model_concurrency`), its rpm and the budget. With one call to the model at a time, every
worker was already queued with the list price when the first overrun taught the ratio: each
of them then went out, one after the other, reserved at the list price, and overran. The
design's limit is "calls already in flight" overrun once; here none was in flight but one.

Real CLI in a subprocess against a stand-in on a loopback port, real DuckDB file.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

from factories import standin_job, texts
from subprocs import query, run_cli_async
from test_audit_cost_above import PricedAbove
from test_billing_standin import MODEL

N = 12
CAP = Decimal("0.02")


async def test_calls_queued_for_the_model_slot_are_reserved_at_the_learnt_ratio(
    tmp_path: Path, serve: Any
) -> None:
    standin = PricedAbove("ok", generation_known=False)  # ~2.8x each call's list reservation
    limits = {
        "concurrency": 8,
        "per_model_concurrency": {MODEL: 1},  # one call in flight at a time
        "reconcile_wait_s": 0,
    }
    base_url = await serve(standin)
    path = standin_job(tmp_path, base_url, model=MODEL, cap=CAP, records=texts(N), limits=limits)
    code, err = await run_cli_async("run", str(path))
    assert code in (0, 3), err
    db = tmp_path / "results.duckdb"
    booked = query(db, "SELECT sum(cost_usd) FROM attempts")[0][0]
    assert standin.billed
    assert booked >= standin.total, (booked, standin.total)
    # As with `concurrency: 1` (test_audit_cost_above): the first overrun teaches the ratio and
    # every call sent after it is reserved at it, so the bill stays under the cap.
    assert standin.total <= CAP, (standin.total, len(standin.billed))
