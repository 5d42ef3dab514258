"""A BYOK answer in the older shape, without `is_byok`, is booked at the fee alone (audit4).

Under BYOK `usage.cost` is only OpenRouter's fee and the provider bills the user's own key
`cost_details.upstream_inference_cost` on top (openrouter-api.md §1.2). "Keys inside `usage`
vary. Older responses omit `cost_details`, `is_byok`, …; the client must treat everything
except the three token counts as optional." An answer that carries both figures but no
`is_byok` was read as not BYOK: booked at `cost` (the 5 % fee), the provider's charge
(20x more) in no row, and no /generation asked (a reported cost is final). The same holds for
GET /generation's `total_cost` / `upstream_inference_cost` without `is_byok`.

Now a `cost` below `upstream_inference_cost` with no `is_byok` is read as BYOK: fee +
upstream. Without BYOK the two figures are equal (or `cost` is the higher, when OpenRouter-side
extras ran), so a lower `cost` means the provider was paid elsewhere; if it were a discount
instead, fee + upstream overcounts, which the money rule allows.

Real CLI in a subprocess against a stand-in on a loopback port, real DuckDB file.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from factories import standin_job, texts
from subprocs import KEY_ENV, query, run_cli_async
from test_billing_standin import MODEL, StandIn

from batchroute.client.parse import parse_usage

N = 6


@dataclass
class UnflaggedByok(StandIn):
    """Every call is BYOK (fee 5 % of the provider's charge, both billed); neither the answer's
    `usage` nor GET /generation says `is_byok`."""

    def _bill(self, body: dict[str, Any], outcome: str) -> tuple[str, dict[str, Any]]:
        gid, usage = super()._bill(body, "byok")
        usage.pop("is_byok")
        self.generations[gid].pop("is_byok")
        return gid, usage


@pytest.mark.parametrize("via", ["usage", "generation"])
@pytest.mark.parametrize("stream", [False, True])
async def test_a_byok_answer_without_its_flag_is_booked_fee_plus_upstream(
    tmp_path: Path, serve: Any, stream: bool, via: str
) -> None:
    """Before (14f3717), all four ways: 6 calls billed $0.007884 (fee $0.000375 + the
    provider's $0.007509), the database $0.000375: the fee only, cost_source 'openrouter'
    (`via` usage) or 'generation' (`via` generation: the answer had no usage, /generation
    corrected its reservation down to the fee)."""
    standin = UnflaggedByok("ok" if via == "usage" else "no_usage")
    job = standin_job(
        tmp_path,
        await serve(standin),
        model=MODEL,
        cap=10,
        records=texts(N),
        limits={"reconcile_wait_s": 30},
    )
    if stream:
        job.write_text(job.read_text().replace("stream: false", "stream: true"))
    code, err = await run_cli_async("run", str(job))
    assert code == 0, err
    assert len(standin.billed) == N
    db = tmp_path / "results.duckdb"
    booked, upstream = query(db, "SELECT sum(cost_usd), sum(upstream_cost_usd) FROM attempts")[0]
    assert query(db, "SELECT sum(cost_usd) FROM results")[0][0] == booked
    assert booked >= standin.total, f"bill ${standin.total} vs database ${booked}"
    assert booked == standin.total  # fee + upstream, exactly: no more than the bill either
    assert upstream is not None  # the provider's share is on the rows
    assert upstream < booked
    source = "openrouter" if via == "usage" else "generation"
    assert query(db, "SELECT DISTINCT cost_source FROM attempts") == [(source,)]


@pytest.mark.parametrize(
    ("extra", "billed"),
    [
        ({"is_byok": False}, "0.01"),  # said not BYOK: as said
        ({}, "0.01"),  # equal figures: not BYOK
        ({"cost": 0.012}, "0.012"),  # cost above upstream (OpenRouter-side extras): not BYOK
        ({"cost_details": {"upstream_inference_cost": "NaN"}}, "0.01"),  # no sum, no crash
        ({"cost_details": None}, "0.01"),
    ],
)
def test_only_a_cost_below_its_upstream_without_a_flag_is_read_as_byok(
    extra: dict[str, Any], billed: str
) -> None:
    raw = {"prompt_tokens": 9, "completion_tokens": 9, "cost": 0.01}
    raw["cost_details"] = {"upstream_inference_cost": 0.01}
    assert parse_usage({**raw, **extra}).billed == Decimal(billed)
    byok = {**raw, "cost": 0.0005}
    assert parse_usage(byok).billed == Decimal("0.0105")
    assert parse_usage({**byok, "is_byok": False}).billed == Decimal("0.0005")


async def test_a_byok_batch_without_its_flag_is_booked_fee_plus_upstream(
    tmp_path: Path, serve: Any
) -> None:
    """The Batch API lane: the batch's `usage` says the fee and the provider's charge without
    `is_byok` (`runner.batching.batch_cost`). Before (14f3717): 8 items billed $0.0016548,
    the database $0.0000788 (the fee alone)."""
    from batch_standin import BatchStandIn
    from test_batch_lane import _job

    standin = BatchStandIn(byok=True, byok_flag=False)
    endpoint = {"base_url": await serve(standin), "api_key_env": KEY_ENV}
    job = _job(tmp_path, 8, endpoint=endpoint)
    code, err = await run_cli_async("run", str(job), "--wait")
    assert code == 0, err
    db = tmp_path / "results.duckdb"
    booked = query(db, "SELECT sum(cost_usd) FROM attempts")[0][0]
    assert query(db, "SELECT sum(cost_usd) FROM results")[0][0] == booked
    assert booked >= standin.total, f"bill ${standin.total} vs database ${booked}"
