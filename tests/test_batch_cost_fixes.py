"""A /generation cost fix lands on the one attempt row it measured, never on another row of the
same (run, record, attempt_no): the real CLI in subprocesses against the Batch API stand-in on a
loopback port, DuckDB's sums compared with the stand-in's own ledger of what it billed.

In a `--wait` run, an expired batch's items and their round-2 resubmission are both batch
attempts (`attempt_no = 0`) of the same record in the same run, and `attempts` has no unique
key. Under BYOK without the provider's charge both rounds are booked at their reservation; the
next run asks /generation about the round-2 answer and, keyed by (run, record, attempt_no), its
UPDATE also overwrote the round-1 row (whose generation is unknown) with the round-2 figure.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml
from batch_standin import MODEL, BatchStandIn
from factories import job_dict, texts, write_jsonl
from subprocs import KEY_ENV, query, run_cli_async

from batchroute.runner import batching as B


def _job(tmp_path: Path, n: int, base_url: str) -> Path:
    write_jsonl(tmp_path / "in.jsonl", texts(n))
    job = job_dict(tmp_path, quality=[], endpoint={"base_url": base_url, "api_key_env": KEY_ENV})
    job["tiers"] = {"mid": {"models": [MODEL], "batch": True}}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path


def _money(db: Path) -> tuple[Decimal, Decimal]:
    ((a,),) = query(db, "SELECT COALESCE(SUM(cost_usd), 0) FROM attempts")
    ((r,),) = query(db, "SELECT COALESCE(SUM(cost_usd), 0) FROM results")
    return Decimal(a), Decimal(r)


async def test_a_generation_fix_of_a_round_2_item_leaves_its_expired_round_1_row_alone(
    tmp_path: Path, serve: Any
) -> None:
    """BYOK without the upstream charge; the first batch expires after running every item
    (billed, long answers) but serves no result lines; round 2 answers them (short answers,
    cheaper). The next run learns round 2's real costs from /generation: DuckDB must still
    hold at least the whole bill (before: round 1's reservations became round 2's costs)."""
    n = 6
    standin = BatchStandIn(
        byok=False, expire=1, expire_answered=n, hide_expired=True, expired_tokens=200
    )
    job = _job(tmp_path, n, await serve(standin))
    db = tmp_path / "results.duckdb"
    code, err = await run_cli_async("run", str(job), "--wait")
    assert code == 0, err
    assert len(standin.posts) == 2  # the expired batch and its round 2
    assert standin.billed[0] > standin.billed[1] > 0
    # both rounds are booked at their reservation, round 2 with generation ids
    rows = query(
        db,
        "SELECT record_key, count(*), count(DISTINCT run_id), count(generation_id) "
        "FROM attempts WHERE attempt_no = 0 AND cost_source = 'reserved' GROUP BY 1",
    )
    assert len(rows) == n
    assert all(r[1:] == (2, 1, 1) for r in rows), rows
    assert _money(db)[0] >= standin.total

    code, err = await run_cli_async("run", str(job))  # its start asks /generation about round 2
    assert code == 0, err
    attempts, results = _money(db)
    assert attempts == results >= standin.total, (attempts, results, standin.total)
    fixed = query(db, "SELECT count(*) FROM attempts WHERE cost_source = 'generation'")
    assert fixed == [(n,)]  # each round-2 row, and only those
    # round 2 is booked at exactly what /generation said; round 1 keeps its reservation
    ((r2,),) = query(db, "SELECT SUM(cost_usd) FROM attempts WHERE cost_source = 'generation'")
    assert Decimal(r2) == standin.billed[1]


async def test_generation_fixes_do_not_drop_the_reservation_of_an_item_billed_without_a_line(
    tmp_path: Path, serve: Any
) -> None:
    """BYOK without the upstream charge; one answered (billed) item's result line comes back
    without its custom_id, so nobody can claim it: its record goes through the sync chain. The
    batch is booked at its reservation; the next run learns the other items' real costs from
    /generation. The line-less item's share must still cover its bill (before: its share was
    by tokens, $0, and the fixes took the rest of the reservation away)."""
    n = 6
    lost = B.custom_id("t", "r00002")
    standin = BatchStandIn(byok=False, unlabelled={lost})
    job = _job(tmp_path, n, await serve(standin))
    db = tmp_path / "results.duckdb"
    code, err = await run_cli_async("run", str(job), "--wait")
    assert code == 0, err
    assert standin.sync_calls == 1  # the unclaimed record, answered synchronously
    assert _money(db)[0] >= standin.total

    code, err = await run_cli_async("run", str(job))  # its start asks /generation about the others
    assert code == 0, err
    assert query(db, "SELECT count(*) FROM attempts WHERE cost_source = 'generation'") == [(n - 1,)]
    attempts, results = _money(db)
    assert attempts == results >= standin.total, (attempts, results, standin.total)


def test_a_reservation_is_split_by_each_item_s_worst_case_not_by_tokens() -> None:
    """Pure: BYOK without the upstream charge, one of three items answered. Its reservation is
    each item's own worst case (summing to the batch's exactly), so the two without an answer
    keep theirs; by tokens they got $0 and the answered one all of it."""
    from batchroute.runner.batching import ItemResult, settle
    from batchroute.types import Completion, CostSource, Usage

    usage = Usage(prompt_tokens=10, completion_tokens=5, cost=Decimal("0.0001"), is_byok=True)
    answer = Completion("hola", "stop", "stop", "m", "p", "gen-a", usage)
    items = {"a": ItemResult("a", completion=answer), "b": ItemResult("b", error="lost")}
    worst = {"a": Decimal("0.002"), "b": Decimal("0.003"), "c": Decimal("0.005")}
    bill = settle(items, ["a", "b", "c"], None, Decimal("0.010"), unknown=True, worst=worst)
    assert bill.source is CostSource.RESERVED
    assert bill.shares == worst
    assert sum(bill.shares.values(), Decimal(0)) == bill.total == Decimal("0.010")
