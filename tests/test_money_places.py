"""A cost reported with more than 12 decimals is never stored below the bill, and a run's
`runs.cost_usd` follows its attempts' cost fixes.

DuckDB's money columns are DECIMAL(38,12) and a cast to them rounds to nearest
(`CAST('0.0000000000004' AS DECIMAL(38,12))` is 0): OpenRouter's `usage.cost`, `/generation`'s
`total_cost` and `upstream_inference_cost`, and a batch's costs can carry more decimals, so each
row could be stored up to 0.5e-12 under its bill. Every path that writes money is checked on real
DuckDB files: the run (its writer process's journal segments, and its cost fixes) against a
stand-in on a loopback port, the batch lane through the real CLI, and the store's row path, cost
fixes, batch rows and run rows directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from batch_standin import MODEL as BATCH_MODEL
from batch_standin import BatchStandIn
from factories import job_dict, texts, write_jsonl
from subprocs import KEY_ENV, query, run_cli_async
from test_billing_standin import MODEL, StandIn

from batchroute.client.parse import parse_usage
from batchroute.runner import RunOptions, run_job_async
from batchroute.runner.batching import batch_cost
from batchroute.spec import load_spec
from batchroute.store import ResultStore
from batchroute.types import (
    AttemptOutcome,
    AttemptRow,
    BatchRow,
    CostFix,
    CostSource,
    RecordStatus,
    ResultRow,
    RunCounts,
    RunStatus,
)
from batchroute.usd import ceil_usd

LONG = Decimal("0.0000001234564321")  # 16 decimals; to nearest at 12: 0.000000123456, under
SHORT = Decimal("0.000000123456")  # 12 decimals: stored exactly
ULP = Decimal("1e-12")
N = 8


@dataclass
class Decimals(StandIn):
    """The billing stand-in, every generation billed `cost` (as a JSON number, every digit)."""

    cost: Decimal = LONG
    figures: dict[str, Decimal] = field(default_factory=dict)  # /generation's, when not `cost`

    def _bill(self, body: dict[str, Any], outcome: str) -> tuple[str, dict[str, Any]]:
        gid = f"gen-{len(self.generations) + 1:06d}"
        c = float(self.cost)
        assert Decimal(repr(c)) == self.cost  # the wire carries every digit
        self.billed.append(self.cost)
        self.generations[gid] = {
            "id": gid, "total_cost": c, "upstream_inference_cost": c, "is_byok": False,
        }  # fmt: skip
        usage = {
            "prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30, "cost": c,
            "is_byok": False, "cost_details": {"upstream_inference_cost": c},
        }  # fmt: skip
        return gid, usage

    async def generation(self, request: web.Request) -> web.Response:
        gid = request.query.get("id", "")
        if gid in self.figures and self.generation_known:
            self.generations[gid]["total_cost"] = float(self.figures[gid])
        return await super().generation(request)


async def _no_sleep(_s: float) -> None:
    return None


async def _run(tmp_path: Path, base_url: str) -> Path:
    """One run of N records on the stand-in's model, in this process (its writer process
    writes the journal segments into DuckDB)."""
    if not (tmp_path / "in.jsonl").exists():
        write_jsonl(tmp_path / "in.jsonl", texts(N))
    job = job_dict(tmp_path, quality=[], budget={"daily_usd": 100})
    job["tiers"] = {"premium": {"models": [MODEL]}}
    job["limits"] = {**job["limits"], "concurrency": 4, "reconcile_wait_s": 10}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    db = tmp_path / "results.duckdb"
    opts = RunOptions(
        api_key="sk-or-v1-test", base_url=base_url, db_path=db, handle_signals=False,
        quiet=True, sleep=_no_sleep, jitter_seed=0, log=lambda _line: None,
    )  # fmt: skip
    await run_job_async(load_spec(path), opts)
    return db


def _one(db: Path, sql: str) -> Decimal:
    ((value,),) = query(db, sql)
    return Decimal(value)


@pytest.mark.parametrize("cost", [LONG, SHORT], ids=["16-decimals", "12-decimals"])
@pytest.mark.parametrize("mode", ["ok", "no_usage"])
async def test_a_run_never_stores_a_reported_cost_below_the_bill(
    tmp_path: Path, serve: Any, cost: Decimal, mode: str
) -> None:
    """ok: `usage.cost` through the writer process's segments; no_usage: booked at the
    reservation, then /generation's `total_cost` as a cost fix. Before, 0.0000001234564321
    was stored as 0.000000123456 on every row (8 × 4.3e-13 under the bill)."""
    standin = Decimals(mode, cost=cost)
    db = await _run(tmp_path, await serve(standin))
    assert len(standin.billed) == N
    source = "openrouter" if mode == "ok" else "generation"
    assert query(db, "SELECT DISTINCT cost_source FROM attempts") == [(source,)]
    attempts = _one(db, "SELECT sum(cost_usd) FROM attempts")
    results = _one(db, "SELECT sum(cost_usd) FROM results")
    run = _one(db, "SELECT sum(cost_usd) FROM runs")
    bill = standin.total
    assert attempts == results == run, (attempts, results, run)
    assert attempts >= bill, (attempts, bill)
    assert attempts - bill < N * ULP  # rounded up, by less than 1e-12 a row
    if cost == SHORT:
        assert attempts == bill
    ((low, n),) = query(db, "SELECT min(usage_cost_usd), count(usage_cost_usd) FROM attempts")
    assert n == N
    assert Decimal(low) >= cost


async def test_runs_cost_follows_a_later_run_s_cost_fixes(tmp_path: Path, serve: Any) -> None:
    """Run 1's calls answer without usage and /generation does not know them yet: booked at
    their reservation. Run 2's start learns figures above the reservations: run 1's attempts
    are fixed, and `runs.cost_usd` of run 1 must say their sum (before: the reservations,
    below the bill)."""
    standin = Decimals("no_usage", generation_known=False, cost=SHORT)
    url = await serve(standin)
    db = await _run(tmp_path, url)
    ((run1,),) = query(db, "SELECT run_id FROM runs")
    reserved = query(db, "SELECT generation_id, cost_usd FROM attempts WHERE run_id = ?", [run1])
    assert len(reserved) == N
    assert query(db, "SELECT DISTINCT cost_source FROM attempts") == [("reserved",)]
    # the real figures: each above its reservation (12 decimals: only runs.cost_usd is at stake)
    standin.figures = {g: Decimal(c) * 3 for g, c in reserved}
    standin.generation_known = True
    await _run(tmp_path, url)
    assert query(db, "SELECT count(*) FROM runs") == [(2,)]
    assert query(db, "SELECT DISTINCT cost_source FROM attempts") == [("generation",)]
    bill = sum(standin.figures.values(), Decimal(0))
    fixed = _one(db, f"SELECT sum(cost_usd) FROM attempts WHERE run_id = '{run1}'")
    run_cost = _one(db, f"SELECT cost_usd FROM runs WHERE run_id = '{run1}'")
    assert fixed == bill
    assert run_cost == fixed, (run_cost, fixed)


# -- the batch lane, through the real CLI --------------------------------------------------


def _batch_job(tmp_path: Path, n: int, base_url: str) -> Path:
    write_jsonl(tmp_path / "in.jsonl", texts(n))
    job = job_dict(tmp_path, quality=[], endpoint={"base_url": base_url, "api_key_env": KEY_ENV})
    job["tiers"] = {"mid": {"models": [BATCH_MODEL], "batch": True}}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path


EXTRA = Decimal("0.0000000000000321")  # each item's bill: 12 decimals and 4 more (which
# rounded to nearest are lost, on each item and on the batch's sum of 6)


async def test_a_batch_s_cost_is_never_stored_below_its_bill(tmp_path: Path, serve: Any) -> None:
    """The batch's `usage.cost` has 16 decimals: its items' shares and the batch row's
    `settled_usd` must cover it (before, settled_usd was cast to nearest: under)."""
    standin = BatchStandIn(extra_usd=EXTRA)
    job = _batch_job(tmp_path, 6, await serve(standin))
    db = tmp_path / "results.duckdb"
    code, err = await run_cli_async("run", str(job), "--wait")
    assert code == 0, err
    assert len(standin.billed) == 1
    assert standin.billed[0] % ULP
    assert query(db, "SELECT DISTINCT cost_source FROM attempts") == [("batch_apportioned",)]
    assert _one(db, "SELECT sum(cost_usd) FROM attempts") >= standin.total
    assert _one(db, "SELECT sum(cost_usd) FROM results") >= standin.total
    assert _one(db, "SELECT sum(settled_usd) FROM batches") >= standin.billed[0]


async def test_batch_items_fixed_by_generation_are_never_below_the_bill(
    tmp_path: Path, serve: Any
) -> None:
    """BYOK without the provider's charge: booked at the reservation; the next run learns
    each item's fee and `upstream_inference_cost` (16 decimals) from /generation. Before, their
    sum was rounded to nearest at 12 places: every item under its bill."""
    n = 6
    standin = BatchStandIn(byok=False, extra_usd=EXTRA)
    job = _batch_job(tmp_path, n, await serve(standin))
    db = tmp_path / "results.duckdb"
    code, err = await run_cli_async("run", str(job), "--wait")
    assert code == 0, err
    code, err = await run_cli_async("run", str(job))  # its start asks /generation
    assert code == 0, err
    assert query(db, "SELECT count(*) FROM attempts WHERE cost_source = 'generation'") == [(n,)]
    attempts = _one(db, "SELECT sum(cost_usd) FROM attempts")
    assert attempts >= standin.total, (attempts, standin.total)
    assert attempts - standin.total < n * ULP
    assert _one(db, "SELECT sum(cost_usd) FROM results") == attempts
    runs = _one(db, "SELECT sum(cost_usd) FROM runs")
    assert runs == attempts, (runs, attempts)


# -- the store's own writes (row path, fixes, batch rows, run rows) ------------------------

T0 = datetime(2026, 5, 1, 12, tzinfo=UTC)


def _attempt(key: str, cost: Decimal, **kw: Any) -> AttemptRow:
    return AttemptRow(
        "run1", "t", key, 1, "mid", "m", T0, 20, 200, AttemptOutcome.OK, None, None, cost,
        kw.pop("source", CostSource.OPENROUTER), kw.pop("gen", None), LONG, **kw,
    )  # fmt: skip


def test_the_store_rounds_every_amount_it_writes_up(tmp_path: Path) -> None:
    """`ResultStore.write` (the row path: a replay, a segment DuckDB's path refuses), a cost
    fix, a batch row and a run's end, each given 16-decimal amounts: nothing stored under."""
    db = tmp_path / "r.duckdb"
    store = ResultStore(db)
    store.migrate()
    store.start_run("run1", "t", "job.yaml", T0, "test")
    store.write(
        [ResultRow("t", "a", "run1", 1, RecordStatus.DONE, created_at=T0, cost_usd=LONG * 2)],
        [
            _attempt("a", LONG, usage_cost_usd=LONG, upstream_cost_usd=LONG),
            _attempt("a", LONG, source=CostSource.RESERVED, gen="g2"),
        ],
    )
    a = query(db, "SELECT cost_usd, reserved_usd, usage_cost_usd, upstream_cost_usd FROM attempts")
    assert all(v is None or v >= LONG for row in a for v in row), a
    assert _one(db, "SELECT cost_usd FROM results") >= LONG * 2
    # the reserved attempt fixed to a figure with 16 decimals, after the run ended
    store.finish_run("run1", RunStatus.COMPLETED, RunCounts(cost_usd=LONG * 2), T0)
    assert _one(db, "SELECT cost_usd FROM runs") >= LONG * 2
    figure = LONG * 3
    fix = CostFix("run1", "t", "a", 1, figure, "generation", figure, figure, generation_id="g2")
    assert store.apply_fixes([fix]) == 1
    ((c, u, up),) = query(
        db, "SELECT cost_usd, usage_cost_usd, upstream_cost_usd FROM attempts WHERE "
        "generation_id = 'g2'",
    )  # fmt: skip
    assert min(c, u, up) >= figure
    total = _one(db, "SELECT sum(cost_usd) FROM attempts")
    assert total >= LONG + figure
    assert _one(db, "SELECT cost_usd FROM results") == total
    assert _one(db, "SELECT cost_usd FROM runs") == total  # the fix moved the ended run too
    row = BatchRow("k", "t", "run1", "mid", "m", [], T0, reserved_usd=LONG, settled_usd=LONG)
    store.save_batch(row, new=True)
    ((res, settled),) = query(db, "SELECT reserved_usd, settled_usd FROM batches")
    assert res >= LONG
    assert settled >= LONG


def test_amounts_are_rounded_up_to_the_store_s_places() -> None:
    """Sanity of the helpers themselves: amounts at ≤ 12 places are kept as they are, longer
    ones go up by less than 1e-12, whatever their size; non-finite ones pass through."""
    assert ceil_usd(SHORT) == SHORT
    assert ceil_usd(Decimal("0.0000000000004")) == ULP
    assert ceil_usd(LONG) == Decimal("0.000000123457")
    assert ceil_usd(Decimal("-0.0000000000004")) == 0
    big = Decimal("12345678901234567890123456.0000000000001")
    assert ceil_usd(big) == Decimal("12345678901234567890123456.000000000001")
    assert ceil_usd(Decimal("Infinity")) == Decimal("Infinity")
    assert ceil_usd(Decimal("NaN")).is_nan()
    # where the API's amounts are read
    usage = parse_usage({"cost": 1.234564321e-07, "cost_details": {"upstream_inference_cost": 1}})
    assert usage.cost == Decimal("0.000000123457")
    assert usage.upstream_cost == 1
    assert batch_cost({"cost": "0.0000001234564321"}) == (Decimal("0.000000123457"), False)
