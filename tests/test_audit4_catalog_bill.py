"""An answer priced from its token counts is never asked about at GET /generation (audit4).

An answer whose `usage` has token counts but no `cost` (older API shapes, pitfall 9 of
openrouter-api.md; an OpenAI-compatible gateway) is booked at the catalogue's prices for those
tokens, `cost_source = 'catalog'`. That figure is final: only `reserved` calls go to the
Reconciler, and `store.fixes` fixes only `reserved` rows. But /models lists one price per model
while the bill is the serving endpoint's (openrouter-api.md §4.1: each endpoint of
`/models/{id}/endpoints` has its own `pricing`; default routing falls back to dearer providers
on 5xx and rate limits, §1.1), and /generation knows the bill. Here every generation is served
by an endpoint at 3x the listed price: the database keeps the catalogue figure for good.

Real CLI in a subprocess against a stand-in on a loopback port, real DuckDB file.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import pytest
from factories import standin_job, texts
from subprocs import query, run_cli_async
from test_billing_standin import COMPLETION_TOKENS, MODEL, Q, StandIn

N = 6
ENDPOINT_FACTOR = 3  # the endpoint that serves bills 3x the /models price


@dataclass
class DearEndpointNoCost(StandIn):
    """Bills every generation at `ENDPOINT_FACTOR` x /models; `/generation` says so; the answer's
    `usage` carries the token counts only (no `cost`, no `cost_details`)."""

    def _bill(self, body: dict[str, Any], outcome: str) -> tuple[str, dict[str, Any]]:
        gid, usage = super()._bill(body, outcome)
        listed = self.billed.pop()
        real = (listed * ENDPOINT_FACTOR).quantize(Q, ROUND_HALF_EVEN)
        self.billed.append(real)
        self.generations[gid].update(total_cost=float(real), upstream_inference_cost=float(real))
        tokens = {k: usage[k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
        return gid, tokens


@pytest.mark.parametrize("stream", [False, True])
async def test_an_answer_priced_from_tokens_is_corrected_by_generation(
    tmp_path: Path, serve: Any, stream: bool
) -> None:
    """Before (14f3717), both ways: 6 calls billed $0.022527 (3x list), the database
    $0.007884 (the catalogue's prices + the 5 % BYOK margin), cost_source 'catalog' on every
    row, /generation never asked although it knew each bill."""
    standin = DearEndpointNoCost("ok")
    job = standin_job(
        tmp_path,
        await serve(standin),
        model=MODEL,
        cap=10,
        records=texts(N),
        limits={"reconcile_wait_s": 30},
    )
    if stream:
        text = job.read_text().replace("stream: false", "stream: true")
        job.write_text(text)
    code, err = await run_cli_async("run", str(job))
    assert code == 0, err
    assert len(standin.billed) == N
    db = tmp_path / "results.duckdb"
    booked = query(db, "SELECT sum(cost_usd) FROM attempts")[0][0]
    results = query(db, "SELECT sum(cost_usd) FROM results")[0][0]
    sources = {r[0] for r in query(db, "SELECT DISTINCT cost_source FROM attempts")}
    assert results == booked
    # the completion alone, at list price, is well below the bill: a sanity check on the stand-in
    assert standin.total > N * COMPLETION_TOKENS * Decimal("0.000006")
    assert booked >= standin.total, (
        f"bill ${standin.total} vs database ${booked} (cost_source {sorted(sources)})"
    )
