"""A wave of calls in flight when a model's first overruns land does not compound its ratio
(review3).

`Pricer.learn` took each overrun's ratio as cost / reservation × the largest ratio already
learnt, to make it relative to the list price whatever the call had been reserved at. But the
calls of the first wave were all reserved at the list price, before anything was learnt: each
of them that lands after the first multiplies the ratio again (2.8, 7.8, 22, 61 with four in
flight at 2.8× their reservation). The model's later calls were then reserved at ~61× the list
price for a bill at 2.8×, and under a cap that held the whole job at its real cost the run
stopped with records `pending` (exit 3) that nothing stopped from being done.

Real CLI in a subprocess against a stand-in on a loopback port, real DuckDB file.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from aiohttp import web
from factories import standin_job, texts
from subprocs import query, run_cli_async
from test_audit_cost_above import PricedAbove
from test_billing_standin import MODEL

N = 12
WAVE = 4
CAP = Decimal("0.1")  # the 12 calls cost ~$0.05 at 4x /models


@dataclass
class HeldWave(PricedAbove):
    """Bills at 4x /models (~2.8x each call's reservation); the first `WAVE` calls are held
    until all of them have arrived, so they are all in flight (reserved) before any answers."""

    arrived: int = 0
    wave: asyncio.Event = field(default_factory=asyncio.Event)
    hold_s: float = 120  # then answers anyway (fewer were ever going to be in flight)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        self.arrived += 1
        if self.arrived >= WAVE:
            self.wave.set()
        if self.arrived <= WAVE:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wave.wait(), timeout=self.hold_s)
        return await super().chat(request)


async def test_a_first_wave_of_overruns_does_not_stop_the_run(tmp_path: Path, serve: Any) -> None:
    standin = HeldWave("ok", generation_known=False)
    limits = {"concurrency": WAVE, "reconcile_wait_s": 0, "timeout_s": 300}
    base_url = await serve(standin)
    path = standin_job(tmp_path, base_url, model=MODEL, cap=CAP, records=texts(N), limits=limits)
    code, err = await run_cli_async("run", str(path))
    db = tmp_path / "results.duckdb"
    rows = dict(query(db, "SELECT status, count(*) FROM results GROUP BY 1"))
    booked = query(db, "SELECT sum(cost_usd) FROM attempts")[0][0]
    assert booked >= standin.total, (booked, standin.total)  # never under the bill
    assert standin.total <= CAP, standin.total
    assert rows == {"done": N}, (rows, code, len(standin.billed), standin.total, err[-2000:])
    assert code == 0, err
