"""The batch lane learns from a batch billed above the catalogue, and reserves at it (money4).

The batch lane reserved every batch at the catalogue's price and booked its attempts without a
reservation (`reserved_usd` NULL), so a provider billing batches above the list taught nothing:
each run's batches were reserved at list price again and, billed ~4x that, passed the cap
(the synchronous path learns a ratio and reserves its later calls at it). Now a batch item's
attempt keeps its share of the batch's reservation and its list-price worst case, the lane
learns from what it collects (in the run, and at the next start from the file) and reserves
its batches at the ratio.

Real CLI (`run --wait`) in a subprocess against the Batch API stand-in on a loopback port,
real DuckDB file.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml
from batch_standin import MODEL, BatchStandIn
from factories import job_dict, texts, write_jsonl
from subprocs import KEY_ENV, query, run_cli_async

N = 20
CAP1 = Decimal("0.01")  # four items at list price


def _job(tmp_path: Path, base_url: str, cap: Decimal, n: int = N) -> Path:
    write_jsonl(tmp_path / "in.jsonl", texts(n))
    job = job_dict(tmp_path, quality=[], endpoint={"base_url": base_url, "api_key_env": KEY_ENV})
    job["tiers"] = {"mid": {"models": [MODEL], "batch": True}}
    job["budget"] = {"daily_usd": float(cap)}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path


async def _run(job: Path) -> str:
    code, err = await asyncio.wait_for(run_cli_async("run", str(job), "--wait"), timeout=300)
    assert code in (0, 3), err  # 3: the budget ran out (the cap is reached, as it should be)
    return err


async def test_a_batch_billed_above_the_catalogue_reserves_the_next_at_the_ratio(
    tmp_path: Path, serve: Any
) -> None:
    """Run 1 (cap $0.01) submits one batch at list price, billed 4x the catalogue (~3.8x its
    reservation): booked as billed (the first wave may overrun). Run 2, the same day with the
    cap raised by 1.5 of the dearest item's bill: before, it reserved its batch at list price,
    so several items fit and the bill passed the raised cap (figures in the design notes);
    after, it reserves at the ratio run 1 taught, one item fits, and the bill stays under."""
    standin = BatchStandIn(item_factor=Decimal(4), completion_tokens=256)
    base_url = await serve(standin)
    db = tmp_path / "results.duckdb"
    err1 = await _run(_job(tmp_path, base_url, CAP1))
    assert len(standin.batches) == 1, err1
    booked, dearest = query(db, "SELECT sum(cost_usd), max(cost_usd) FROM attempts")[0]
    assert booked >= standin.total, (booked, standin.total)
    assert standin.total > CAP1, "the batch was not billed above its reservation: proves nothing"
    assert query(db, "SELECT count(*) FROM results WHERE status = 'pending'")[0][0] > 0
    cap2 = booked + dearest * Decimal("1.5")
    err2 = await _run(_job(tmp_path, base_url, cap2))
    assert len(standin.batches) == 2, f"run 2 submitted nothing: it proves nothing\n{err2}"
    booked2 = query(db, "SELECT sum(cost_usd) FROM attempts")[0][0]
    assert booked2 >= standin.total, (booked2, standin.total)  # never under the bill
    items2 = len(standin.batches["batch-0002"]["body"]["requests"])
    assert standin.total <= cap2, (standin.total, cap2, items2, err2[-1500:])


async def test_an_expired_batchs_round_two_is_reserved_at_the_ratio_it_taught(
    tmp_path: Path, serve: Any
) -> None:
    """In one `run --wait`: the first batch (8 items, at list price, the cap just above)
    expires with one item run, billed 4x the catalogue; its 7 unrun items are resubmitted
    once (round 2). Before: round 2 was reserved at list price, as many items as the list
    fitted went, and the bill passed the cap: round 2's 7 items billed $0.059512, $0.067904
    in all against $0.03. After: the lane learnt the ratio from the batch it collected and
    reserves round 2 at it: 2 items, $0.025368 in all = DuckDB."""
    standin = BatchStandIn(
        item_factor=Decimal(4), completion_tokens=256, expire=1, expire_answered=1,
        expired_tokens=256,
    )  # fmt: skip
    base_url = await serve(standin)
    cap = Decimal("0.03")  # 8 items at list price (~$0.0025 each) and 7 more, not 7 at ~4x
    job = _job(tmp_path, base_url, cap, n=8)
    err = await _run(job)
    db = tmp_path / "results.duckdb"
    assert len(standin.batches) == 2, f"no round 2: it proves nothing\n{err}"
    booked = query(db, "SELECT sum(cost_usd) FROM attempts")[0][0]
    assert booked >= standin.total, (booked, standin.total)
    assert standin.total <= cap, (standin.total, cap, err[-1500:])
