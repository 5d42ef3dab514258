"""The batch lane (issue 14) against a Batch API stand-in (`batch_standin.py`): money,
durability, collection, fallback. End-to-end runs of the real CLI are in test_batch_cli.py."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest
import yaml
from batch_standin import MODEL, BatchStandIn
from factories import job_dict, texts, write_jsonl
from hypothesis import given
from hypothesis import strategies as st

from batchroute.runner import RunOptions, run_job_async
from batchroute.runner import batching as B
from batchroute.runner.work import RunReport, utcnow
from batchroute.spec import load_spec
from batchroute.store import ResultStore
from batchroute.types import BatchItem, BatchRow, Completion, RunStatus, Usage


# ------------------------------------------------------------------ pure parts
def test_custom_ids_are_short_safe_stable_and_distinct() -> None:
    ids = {B.custom_id("job", k) for k in ["a", "b", "a b", "é" * 300, "x" * 1000, "1", "01"]}
    assert len(ids) == 7
    assert all(B.CUSTOM_ID.match(i) for i in ids)
    assert B.custom_id("job", "a") == B.custom_id("job", "a") != B.custom_id("job2", "a")


def test_create_body_puts_endpoint_and_model_before_requests() -> None:
    raw = B.create_body("m", [{"custom_id": "r1", "body": {"messages": []}}])
    assert raw.index(b'"endpoint"') < raw.index(b'"model"') < raw.index(b'"requests"')
    assert orjson.loads(raw)["completion_window"] == "24h"


def test_chunks_respect_the_request_and_byte_limits() -> None:
    assert [len(r) for r in B.chunks([10] * 12_000)] == [5_000, 5_000, 2_000]
    big = B.MAX_BYTES // 3
    assert [len(r) for r in B.chunks([big] * 7)] == [2, 2, 2, 1]


def test_records_that_could_sink_a_batch_are_kept_out() -> None:
    assert B.why_not_batchable([], 10, 10, None) == "empty messages"
    assert B.why_not_batchable([{"role": "user", "content": " "}], 10, 10, None)
    assert B.why_not_batchable([{"role": "user", "content": "hi"}], 10, 10, None) is None


@given(
    st.integers(min_value=0, max_value=10**15),
    st.lists(st.integers(min_value=0, max_value=10**6), min_size=1, max_size=40),
)
def test_apportioned_shares_sum_to_the_batch_total_exactly(units: int, weights: list[int]) -> None:
    total = Decimal(units) * B.USD_PLACES
    shares = B.apportion(total, {f"c{i:03d}": w for i, w in enumerate(weights)})
    assert sum(shares.values(), Decimal(0)) == total
    assert all(s >= 0 and s == s.quantize(B.USD_PLACES) for s in shares.values())
    assert shares == B.apportion(total, {f"c{i:03d}": w for i, w in enumerate(weights)})


def test_a_cap_takes_only_the_prefix_that_fits() -> None:
    assert B.fitting_prefix([Decimal(1)] * 5, Decimal("3.5")) == 3
    assert B.fitting_prefix([Decimal(5)], Decimal(4)) == 0


# ------------------------------------------------------------------ the lane, in-process
async def _no_sleep(_s: float) -> None:
    return None


def _job(
    tmp_path: Path,
    n: int,
    *,
    batch: bool = True,
    cap: str = "10",
    checks: tuple[str, ...] = (),
    **extra: Any,
) -> Path:
    write_jsonl(tmp_path / "in.jsonl", texts(n))
    job = job_dict(tmp_path, quality=list(checks), budget={"daily_usd": cap}, **extra)
    job["tiers"] = {"mid": {"models": [MODEL], "batch": batch}}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path


async def _run(
    job: Path, base_url: str, *, wait: bool, lines: list[str] | None = None
) -> RunReport:
    opts = RunOptions(
        api_key="sk-or-v1-test", base_url=base_url, db_path=job.parent / "results.duckdb",
        handle_signals=False, quiet=True, sleep=_no_sleep, jitter_seed=0,
        log=(lines.append if lines is not None else (lambda _l: None)), wait=wait,
    )  # fmt: skip
    return await run_job_async(load_spec(job), opts)


def _q(db: Path, sql: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _money(db: Path) -> tuple[Decimal, Decimal]:
    a = _q(db, "SELECT COALESCE(SUM(cost_usd), 0) FROM attempts")[0][0]
    r = _q(db, "SELECT COALESCE(SUM(cost_usd), 0) FROM results")[0][0]
    return Decimal(a), Decimal(r)


def _statuses(db: Path) -> dict[str, int]:
    return dict(_q(db, "SELECT status, count(*) FROM results GROUP BY status"))


async def test_waiting_run_books_every_record_at_the_billed_batch_cost(
    tmp_path: Path, serve: Any
) -> None:
    standin = BatchStandIn(polls_to_finish=3, page_size=37)
    job = _job(tmp_path, 300)
    report = await _run(job, await serve(standin), wait=True)
    db = tmp_path / "results.duckdb"
    assert report.status is RunStatus.COMPLETED
    assert report.batches_in_flight == 0
    assert _statuses(db) == {"done": 300}
    assert len(standin.posts) == 1
    assert standin.sync_calls == 0
    assert _money(db) == (standin.total, standin.total)
    assert standin.total > 0
    sources = _q(db, "SELECT DISTINCT cost_source FROM results")
    assert sources == [("batch_apportioned",)]
    (row,) = ResultStore(db).batches()
    assert row.status == "collected"
    assert row.settled_usd == standin.total
    assert row.reserved_usd >= standin.total
    assert {i.key for i in row.items} == {f"r{i:05d}" for i in range(300)}


async def test_per_item_costs_are_used_when_the_items_carry_them(
    tmp_path: Path, serve: Any
) -> None:
    standin = BatchStandIn(per_item_cost=True)
    report = await _run(_job(tmp_path, 20), await serve(standin), wait=True)
    db = tmp_path / "results.duckdb"
    assert report.status is RunStatus.COMPLETED
    assert _money(db) == (standin.total, standin.total)
    assert _q(db, "SELECT DISTINCT cost_source FROM results") == [("openrouter",)]


async def test_without_wait_the_run_ends_with_batches_in_flight_and_the_next_collects(
    tmp_path: Path, serve: Any
) -> None:
    standin = BatchStandIn(polls_to_finish=2)
    job = _job(tmp_path, 50)
    url = await serve(standin)
    first = await _run(job, url, wait=False)
    db = tmp_path / "results.duckdb"
    assert first.batches_in_flight == 1
    assert first.status is RunStatus.COMPLETED
    assert _statuses(db) == {}
    (row,) = ResultStore(db).batches()
    assert row.status == "submitted"
    assert row.batch_id == "batch-0001"
    # Its reservation counts against today until settled: a batch cannot be cancelled.
    state = ResultStore(db).resume_state("t", final_statuses=(), day=utcnow().date(), scope="t")
    assert state.spent == row.reserved_usd
    second = await _run(job, url, wait=False)  # still in progress: its records are not resent
    assert second.batches_in_flight == 1
    assert len(standin.posts) == 1
    third = await _run(job, url, wait=False)
    assert third.batches_in_flight == 0
    assert len(standin.posts) == 1
    # The spend is booked to the run that collected it, and that run's cost says so.
    assert _q(db, "SELECT DISTINCT run_id FROM attempts") == [(third.run_id,)]
    runs = _q(db, f"SELECT cost_usd FROM runs WHERE run_id = '{third.run_id}'")
    assert runs == [(standin.total,)]
    assert _statuses(db) == {"done": 50}
    assert _money(db) == (standin.total, standin.total)
    state = ResultStore(db).resume_state("t", final_statuses=(), day=utcnow().date(), scope="t")
    assert state.spent == standin.total


async def test_failed_items_and_malformed_lines_go_through_the_sync_chain(
    tmp_path: Path, serve: Any
) -> None:
    bad = B.custom_id("t", "r00003")
    standin = BatchStandIn(
        fail_items={bad: "upstream error"}, malformed={B.custom_id("t", "r00007")}
    )
    report = await _run(_job(tmp_path, 10), await serve(standin), wait=True)
    db = tmp_path / "results.duckdb"
    assert report.status is RunStatus.COMPLETED
    assert _statuses(db) == {"done": 10}
    assert standin.sync_calls == 2
    assert _money(db) == (standin.total, standin.total)
    attempts = _q(
        db,
        "SELECT record_key, attempt_no, outcome FROM attempts "
        "WHERE record_key = 'r00003' ORDER BY attempt_no",
    )
    assert attempts == [("r00003", 0, "fallback"), ("r00003", 1, "ok")]
    assert _q(db, "SELECT attempts FROM results WHERE record_key = 'r00003'") == [(2,)]


async def test_a_batch_failed_in_validation_falls_back_whole(tmp_path: Path, serve: Any) -> None:
    standin = BatchStandIn(validation_error="request 3: max_tokens must be >= 1")
    report = await _run(_job(tmp_path, 12), await serve(standin), wait=True)
    db = tmp_path / "results.duckdb"
    assert report.status is RunStatus.COMPLETED
    assert _statuses(db) == {"done": 12}
    assert standin.sync_calls == 12
    assert _money(db) == (standin.total, standin.total)
    (row,) = ResultStore(db).batches()
    assert row.settled_usd == 0
    assert "max_tokens" in (row.error_message or "")


@pytest.mark.parametrize("expired_lines", [False, True])
async def test_an_expired_batch_is_resubmitted_once(
    tmp_path: Path, serve: Any, expired_lines: bool
) -> None:
    standin = BatchStandIn(expire=1, expire_answered=4, expired_lines=expired_lines)
    report = await _run(_job(tmp_path, 10), await serve(standin), wait=True)
    db = tmp_path / "results.duckdb"
    assert report.status is RunStatus.COMPLETED
    assert _statuses(db) == {"done": 10}
    assert len(standin.posts) == 2
    assert standin.sync_calls == 0
    second = orjson.loads(standin.posts[1])
    assert len(second["requests"]) == 6
    rounds = [r.round for r in ResultStore(db).batches()]
    assert rounds == [1, 2]
    assert _money(db) == (standin.total, standin.total)


async def test_an_expired_resubmission_falls_back_to_sync(tmp_path: Path, serve: Any) -> None:
    standin = BatchStandIn(expire=2, expire_answered=0)
    await _run(_job(tmp_path, 5), await serve(standin), wait=True)
    db = tmp_path / "results.duckdb"
    assert _statuses(db) == {"done": 5}
    assert len(standin.posts) == 2
    assert standin.sync_calls == 5


async def test_a_404_right_after_submit_is_not_a_lost_batch(tmp_path: Path, serve: Any) -> None:
    standin = BatchStandIn(lag_404=3)
    lines: list[str] = []
    report = await _run(_job(tmp_path, 8), await serve(standin), wait=True, lines=lines)
    db = tmp_path / "results.duckdb"
    assert report.status is RunStatus.COMPLETED
    assert _statuses(db) == {"done": 8}
    assert len(standin.posts) == 1
    assert standin.batches["batch-0001"]["gets"] > 3


async def test_a_model_without_a_batch_endpoint_falls_back_once_with_a_warning(
    tmp_path: Path, serve: Any
) -> None:
    standin = BatchStandIn(no_batch_endpoint=True)
    report = await _run(_job(tmp_path, 9), await serve(standin), wait=True)
    db = tmp_path / "results.duckdb"
    assert report.status is RunStatus.COMPLETED
    assert report.batches_in_flight == 0
    assert _statuses(db) == {"done": 9}
    assert standin.sync_calls == 9
    assert len(standin.posts) == 2  # each id form once (base, `:batch`), not per record
    assert any(":batch endpoint" in n for n in report.notes)
    rows = ResultStore(db).batches()
    assert [r.status for r in rows] == ["rejected", "rejected"]
    assert all(r.settled_usd == 0 for r in rows)


async def test_a_cap_below_one_batch_s_worst_case_never_submits_over_it(
    tmp_path: Path, serve: Any
) -> None:
    spec = load_spec(_job(tmp_path, 100))
    # Worst case of one record here: prompt bound × prompt price + 256 × completion price.
    cap = "0.02"
    standin = BatchStandIn()
    job = _job(tmp_path, 100, cap=cap)
    report = await _run(job, await serve(standin), wait=True)
    db = tmp_path / "results.duckdb"
    rows = ResultStore(db).batches()
    assert rows
    assert all(r.reserved_usd <= Decimal(cap) for r in rows)
    assert sum((r.reserved_usd for r in rows), Decimal(0)) <= Decimal(cap)
    submitted = sum(len(r.items) for r in rows)
    assert 0 < submitted < 100
    assert report.status is RunStatus.BUDGET_EXHAUSTED
    st_ = _statuses(db)
    assert st_["done"] == submitted
    assert st_["pending"] == 100 - submitted
    assert standin.total <= Decimal(cap)
    assert spec.name == "t"


async def test_an_intent_whose_post_landed_is_adopted_not_resent(
    tmp_path: Path, serve: Any
) -> None:
    """The process died between the POST and the write of its batch id: the next run finds
    the batch in GET /batches and collects it; nothing is submitted twice."""
    standin = BatchStandIn()
    url = await serve(standin)
    job = _job(tmp_path, 6)
    first = await _run(job, url, wait=False)
    assert first.batches_in_flight == 1
    db = tmp_path / "results.duckdb"
    store = ResultStore(db)
    (row,) = store.batches()
    row.batch_id, row.status, row.submitted_at = None, "intent", None  # as if killed in between
    store.save_batch(row)
    again = await _run(job, url, wait=True)
    assert again.status is RunStatus.COMPLETED
    assert len(standin.posts) == 1
    assert _statuses(db) == {"done": 6}
    assert [r.batch_id for r in store.batches()] == ["batch-0001"]


async def test_an_old_intent_with_no_batch_is_abandoned_and_its_records_sent(
    tmp_path: Path, serve: Any
) -> None:
    standin = BatchStandIn()
    url = await serve(standin)
    job = _job(tmp_path, 4)
    db = tmp_path / "results.duckdb"
    store = ResultStore(db)
    store.migrate()
    items = [BatchItem(f"r{i:05d}", i + 1, B.custom_id("t", f"r{i:05d}"), "translation", "low",
                       "job.task", "fp", 50) for i in range(4)]  # fmt: skip
    ghost = BatchRow("bk-ghost", "t", "old-run", "mid", MODEL, items,
                     utcnow() - timedelta(hours=1), Decimal("0.01"))  # fmt: skip
    store.save_batch(ghost, new=True)
    report = await _run(job, url, wait=True)
    assert report.status is RunStatus.COMPLETED
    assert _statuses(db) == {"done": 4}
    assert len(standin.posts) == 1
    assert [r.status for r in store.batches()] == ["abandoned", "collected"]


async def test_a_batch_answer_that_fails_a_quality_check_is_not_done(
    tmp_path: Path, serve: Any
) -> None:
    """Cut at max_tokens with `quality: [length]`: paid (its share of the bill stays on the
    record), then sent through the synchronous chain like a failed item."""
    standin = BatchStandIn(cut_items={B.custom_id("t", "r00001")})
    report = await _run(_job(tmp_path, 5, checks=("length",)), await serve(standin), wait=True)
    db = tmp_path / "results.duckdb"
    assert report.status is RunStatus.COMPLETED
    assert _statuses(db) == {"done": 5}
    assert standin.sync_calls == 1
    first = _q(db, "SELECT error_type FROM attempts WHERE record_key = 'r00001' AND attempt_no = 0")
    assert first == [("finish_length",)]
    assert _money(db) == (standin.total, standin.total)


async def test_a_record_dearer_than_the_whole_cap_fails_at_once_and_is_not_batched(
    tmp_path: Path, serve: Any
) -> None:
    standin = BatchStandIn()
    report = await _run(_job(tmp_path, 3, cap="0.001"), await serve(standin), wait=True)
    db = tmp_path / "results.duckdb"
    assert standin.posts == []
    assert standin.sync_calls == 0
    assert _q(db, "SELECT DISTINCT error_type FROM results") == [("exceeds_daily_cap",)]
    assert report.counts.failed == 3


async def test_a_full_batch_is_submitted_while_the_queue_still_fills(
    tmp_path: Path, serve: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(B, "MAX_REQUESTS", 4)
    standin = BatchStandIn()
    await _run(_job(tmp_path, 10), await serve(standin), wait=True)
    assert [len(orjson.loads(p)["requests"]) for p in standin.posts] == [4, 4, 2]
    assert _statuses(tmp_path / "results.duckdb") == {"done": 10}


async def test_a_byok_batch_costs_the_fee_plus_the_provider_s_charge(
    tmp_path: Path, serve: Any
) -> None:
    standin = BatchStandIn(byok=True)
    await _run(_job(tmp_path, 8), await serve(standin), wait=True)
    assert _money(tmp_path / "results.duckdb") == (standin.total, standin.total)


async def test_a_byok_batch_without_its_upstream_cost_keeps_its_reservation(
    tmp_path: Path, serve: Any
) -> None:
    standin = BatchStandIn(byok=False)
    await _run(_job(tmp_path, 8), await serve(standin), wait=True)
    db = tmp_path / "results.duckdb"
    (row,) = ResultStore(db).batches()
    assert _money(db) == (row.reserved_usd, row.reserved_usd)
    assert row.reserved_usd >= standin.total
    # booked at its reservation, and said so: the report counts 'reserved' rows as unconfirmed
    # (before: labelled 'batch_apportioned', as if it were the batch's bill)
    assert _q(db, "SELECT DISTINCT cost_source FROM attempts") == [("reserved",)]
    report = ResultStore(db).report(by=(), since=None, job_name=None)
    assert (report.totals.reserved_calls, report.totals.reserved_usd) == (8, row.reserved_usd)


async def test_a_post_whose_answer_is_lost_is_adopted_not_sent_twice(
    tmp_path: Path, serve: Any
) -> None:
    """The batch was created but the 202 never arrived (timeout): the row stays an intent, the
    waiting run finds the batch in GET /batches and collects it."""
    standin = BatchStandIn(lose_202=1)
    job = _job(tmp_path, 7, limits={"timeout_s": 0.5})
    lines: list[str] = []
    report = await _run(job, await serve(standin), wait=True, lines=lines)
    db = tmp_path / "results.duckdb"
    assert report.status is RunStatus.COMPLETED
    assert len(standin.posts) == 1
    assert _statuses(db) == {"done": 7}
    assert any("adopted batch-0001" in ln for ln in lines), lines
    assert _money(db) == (standin.total, standin.total)


async def test_records_in_a_batch_still_out_are_not_resent_after_the_tier_turns_sync(
    tmp_path: Path, serve: Any
) -> None:
    """Batch off in the job file while a batch is out: its records wait for it anyway."""
    standin = BatchStandIn(polls_to_finish=2)
    url = await serve(standin)
    first = await _run(_job(tmp_path, 6), url, wait=False)
    assert first.batches_in_flight == 1
    second = await _run(_job(tmp_path, 6, batch=False), url, wait=False)
    assert second.batches_in_flight == 1
    assert standin.sync_calls == 0
    third = await _run(_job(tmp_path, 6, batch=False), url, wait=False)
    assert third.batches_in_flight == 0
    assert standin.sync_calls == 0
    assert _statuses(tmp_path / "results.duckdb") == {"done": 6}


# ------------------------------------------------------------ the bill vs the database (review)
def _finish_all(standin: BatchStandIn) -> None:
    """The real API bills a batch whether or not anyone looks at it: run every batch the
    stand-in holds, so its bill counts them all."""
    for bid in list(standin.batches):
        standin._finish(bid)


@pytest.mark.parametrize("item_usage", [True, False])
async def test_a_batch_whose_usage_is_null_is_never_booked_under_its_bill(
    tmp_path: Path, serve: Any, item_usage: bool
) -> None:
    """`usage: null` on a completed batch (and, as in a recorded Anthropic result, no per-item
    usage either): the database cannot know the bill, so it books what was reserved for it,
    never less (before: tokens × price, and $0 when the items carry no tokens)."""
    standin = BatchStandIn(batch_usage=False, item_usage=item_usage)
    report = await _run(_job(tmp_path, 12), await serve(standin), wait=True)
    db = tmp_path / "results.duckdb"
    assert report.status is RunStatus.COMPLETED
    assert _statuses(db) == {"done": 12}
    assert standin.total > 0
    attempts, results = _money(db)
    assert attempts == results
    assert attempts >= standin.total
    (row,) = ResultStore(db).batches()
    assert row.settled_usd == attempts <= row.reserved_usd


async def test_items_whose_costs_add_up_to_more_than_the_batch_s_are_booked_at_the_larger(
    tmp_path: Path, serve: Any
) -> None:
    """Per-item usage.cost summing to twice the batch's usage.cost: which one the balance paid
    is not documented, so the database takes the larger (it may overcount, never under)."""
    standin = BatchStandIn(per_item_cost=True, item_cost_factor=Decimal(2))
    await _run(_job(tmp_path, 10), await serve(standin), wait=True)
    db = tmp_path / "results.duckdb"
    items = sum(
        (Decimal(str(ln["response"]["body"]["usage"]["cost"]))
         for b in standin.batches.values() for ln in b["lines"]),
        Decimal(0),
    )  # fmt: skip
    assert items == 2 * standin.total > 0
    assert _money(db) == (items, items)


async def test_another_job_s_batch_of_the_same_shape_is_not_adopted(
    tmp_path: Path, serve: Any
) -> None:
    """Killed between the POST and the id write (here: the 202 is lost) while another job of
    the workspace has a batch of the same model and size: the lane must adopt its own batch.
    Before: it took the other one (listed first), sent its 7 records again synchronously, and
    its own batch, billed, was in no database ($0.003889 booked of a $0.004101 bill)."""
    standin = BatchStandIn(lose_202=1)
    other = [{"custom_id": B.custom_id("other-job", f"k{i}"),
              "body": {"messages": [{"role": "user", "content": f"other {i}"}]}}
             for i in range(7)]  # fmt: skip
    standin.batches["batch-0000"] = {
        "body": {"endpoint": "/v1/chat/completions", "model": f"{MODEL}:batch", "requests": other},
        "gets": 0, "n": 99,
    }  # fmt: skip
    job = _job(tmp_path, 7, limits={"timeout_s": 0.5})
    lines: list[str] = []
    report = await _run(job, await serve(standin), wait=True, lines=lines)
    db = tmp_path / "results.duckdb"
    assert report.status is RunStatus.COMPLETED
    assert _statuses(db) == {"done": 7}
    assert [r.batch_id for r in ResultStore(db).batches()] == ["batch-0001"]
    assert standin.sync_calls == 0
    _finish_all(standin)
    other_bill = Decimal(standin.batches["batch-0000"]["usage"]["cost"])  # billed to it
    assert _money(db) == (standin.total - other_bill, standin.total - other_bill)


async def test_a_batch_deleted_by_hand_does_not_keep_a_waiting_run_forever(
    tmp_path: Path, serve: Any
) -> None:
    """404 long after the not-visible window (DELETE by hand, or a key of another workspace):
    the batch is given up, booked at its reservation (it may have run and been billed), and
    its records go through the synchronous chain. Before: `--wait` polled it forever."""
    standin = BatchStandIn(gone={"batch-0001"})
    clock = [utcnow()]

    async def tick(s: float) -> None:
        clock[0] += timedelta(seconds=s)
        if clock[0] > utcnow() + timedelta(days=2):
            raise AssertionError("still polling a deleted batch after two days")

    job = _job(tmp_path, 5)
    opts = RunOptions(
        api_key="sk-or-v1-test", base_url=await serve(standin),
        db_path=tmp_path / "results.duckdb", handle_signals=False, quiet=True, sleep=tick,
        jitter_seed=0, log=lambda _l: None, wait=True, now=lambda: clock[0],
    )  # fmt: skip
    report = await run_job_async(load_spec(job), opts)
    db = tmp_path / "results.duckdb"
    assert report.batches_in_flight == 0
    assert _statuses(db) == {"done": 5}
    assert standin.sync_calls == 5
    (row,) = ResultStore(db).batches()
    assert row.status == "collected"
    assert row.settled_usd == row.reserved_usd > 0
    attempts, _ = _money(db)
    _finish_all(standin)  # it ran before it was deleted: billed
    assert attempts >= standin.total


def _answer(cid: str, cost: str) -> B.ItemResult:
    usage = Usage(prompt_tokens=10, completion_tokens=5, cost=Decimal(cost))
    return B.ItemResult(cid, completion=Completion("hi", "stop", None, MODEL, None, None, usage))


def test_a_result_line_for_an_unknown_custom_id_is_not_left_out_of_an_unreported_bill() -> None:
    """usage: null, every item of ours answered with its cost, and one more line whose
    custom_id is none of ours (billed like the others): the per-item sum of ours is not the
    bill (before: $2 booked of $3), so the reservation is."""
    items = {c: _answer(c, "1") for c in ("a", "b", "stranger")}
    bill = B.settle(items, ["a", "b"], None, Decimal(5))
    assert bill.total >= Decimal(3)
    assert sum(bill.shares.values(), Decimal(0)) == bill.total
    assert set(bill.shares) == {"a", "b"}


@pytest.mark.parametrize("refused", [f"{MODEL}:batch", MODEL])
async def test_a_refused_batch_id_is_tried_once_in_its_other_form(
    tmp_path: Path, serve: Any, refused: str
) -> None:
    """400 "does not have a :batch endpoint" for one id form (the catalogue over-reports;
    batch-api.md §7 recommends the other form once) before falling back to synchronous calls
    at twice the price. Before: the tier went synchronous at once."""
    standin = BatchStandIn(refuse={refused}, list_variant=refused.endswith(":batch"))
    report = await _run(_job(tmp_path, 6), await serve(standin), wait=True)
    db = tmp_path / "results.duckdb"
    assert report.status is RunStatus.COMPLETED
    assert _statuses(db) == {"done": 6}
    assert standin.sync_calls == 0
    models = [orjson.loads(p)["model"] for p in standin.posts]
    assert models[0] == refused != models[1]
    assert len(models) == 2
    assert [r.status for r in ResultStore(db).batches()] == ["rejected", "collected"]
    assert _money(db) == (standin.total, standin.total)


async def test_the_key_s_limit_leaves_room_for_earlier_batches_not_billed_yet(
    tmp_path: Path, serve: Any
) -> None:
    """A batch of an earlier run is still out, not billed yet, so GET /key's limit_remaining
    does not show it; it will be billed against that same remaining. The next run may reserve
    only what is left once it is paid (before: $0.0249 reserved beside a $0.0245 batch out,
    against $0.0368 remaining)."""
    standin = BatchStandIn(polls_to_finish=1_000)
    url = await serve(standin)
    first = await _run(_job(tmp_path, 10), url, wait=False)
    assert first.batches_in_flight == 1
    (old,) = ResultStore(tmp_path / "results.duckdb").batches()
    standin.key_remaining = old.reserved_usd * Decimal("1.5")
    second = await _run(_job(tmp_path, 20), url, wait=False)  # ten more records
    assert second.batches_in_flight == 2
    rows = ResultStore(tmp_path / "results.duckdb").batches()
    new = sum((r.reserved_usd for r in rows[1:]), Decimal(0))
    assert 0 < new <= standin.key_remaining - old.reserved_usd


async def test_a_run_whose_cap_is_below_a_batch_still_out_sends_nothing_new(
    tmp_path: Path, serve: Any
) -> None:
    """A batch of an earlier run is out (its reservation counts against today); a second run
    with a smaller cap than that reservation submits nothing, sends nothing synchronously, and
    the run that collects the batch books exactly its bill."""
    standin = BatchStandIn(polls_to_finish=2)
    url = await serve(standin)
    first = await _run(_job(tmp_path, 10), url, wait=False)
    (old,) = ResultStore(tmp_path / "results.duckdb").batches()
    cap = str((old.reserved_usd / 2).quantize(Decimal("0.000001")))
    second = await _run(_job(tmp_path, 20, cap=cap), url, wait=False)
    assert first.batches_in_flight == second.batches_in_flight == 1
    assert second.status is RunStatus.BUDGET_EXHAUSTED
    assert len(standin.posts) == 1
    assert standin.sync_calls == 0
    third = await _run(_job(tmp_path, 10, cap=cap), url, wait=False)
    assert third.batches_in_flight == 0
    db = tmp_path / "results.duckdb"
    assert _statuses(db) == {"done": 10, "pending": 10}  # the ten new ones wait for room
    assert _money(db) == (standin.total, standin.total)


async def test_a_402_at_submission_commits_nothing_and_keeps_the_records(
    tmp_path: Path, serve: Any
) -> None:
    """402: the batch's estimated cost exceeds the balance (batch-api.md §3). Nothing was
    created: the reservation is released, the row is `rejected` at $0, the records stay pending
    for a later run, and the run stops instead of sending them synchronously."""
    msg = "This request requires more credits, or fewer max_tokens."
    standin = BatchStandIn(post_error=(402, msg))
    report = await _run(_job(tmp_path, 6), await serve(standin), wait=True)
    db = tmp_path / "results.duckdb"
    assert report.status is RunStatus.FAILED
    assert report.batches_in_flight == 0
    assert standin.sync_calls == 0
    assert _statuses(db) == {"pending": 6}
    (row,) = ResultStore(db).batches()
    assert (row.status, row.settled_usd) == ("rejected", 0)
    assert _money(db) == (0, 0)


def test_the_dry_run_s_worst_case_counts_a_batch_item_before_its_synchronous_chain(
    tmp_path: Path,
) -> None:
    """A batch tier's record may be paid twice: its batch item (reserved at the batch id's
    price: the base one's when the catalogue lists no `:batch`) and, when that item fails, every
    call of the tier's synchronous chain. The quote's worst case must hold both (before: only
    the chain, so the run could spend more than the dry run's 'worst case')."""
    from batchroute.catalog import Catalog
    from batchroute.lookup import MemoryLookup
    from batchroute.plan import Overrides, build_plan
    from batchroute.quote import quote
    from batchroute.reader import read_records
    from batchroute.types import ResumeState

    write_jsonl(tmp_path / "in.jsonl", texts(8))
    job = job_dict(tmp_path, budget={"daily_usd": "10"})
    job["tiers"] = {"mid": {"models": ["openai/gpt-4o-mini"], "batch": True}}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job, sort_keys=False))
    spec = load_spec(tmp_path / "job.yaml")
    plan = build_plan(spec, Catalog.shipped(), ResumeState(), Overrides())
    intake = plan.intake(MemoryLookup())
    chain = lane = Decimal(0)
    for rec in read_records(spec.input, id_field=spec.id_field):
        item = intake.admit(rec).item
        assert item is not None
        chain += plan.worst_record(item)
        lane += plan.worst_call(("openai/gpt-4o-mini",), item.prompt_bound)
    q = quote(spec, db_path=tmp_path / "none.duckdb", today=utcnow().date())
    assert q.tiers["mid"].records == 8
    assert q.tiers["mid"].worst_usd >= chain + lane > chain


async def test_an_intent_s_batch_that_expired_billed_without_result_lines_is_still_booked(
    tmp_path: Path, serve: Any
) -> None:
    """The 202 was lost, and the batch expired after running 3 of its 6 items, with no result
    lines to show (whether expired batches serve them is undocumented) but a usage.cost. Its
    custom_ids cannot be checked, yet it was billed: adopting it books that bill (an
    overcount if it is another job's, never an undercount); ignoring it leaves a paid batch in
    no database."""
    standin = BatchStandIn(lose_202=1, expire=1, expire_answered=3, hide_expired=True)
    clock = [utcnow()]

    async def tick(s: float) -> None:
        clock[0] += timedelta(seconds=s)

    job = _job(tmp_path, 6, limits={"timeout_s": 0.5})
    opts = RunOptions(
        api_key="sk-or-v1-test", base_url=await serve(standin),
        db_path=tmp_path / "results.duckdb", handle_signals=False, quiet=True, sleep=tick,
        jitter_seed=0, log=lambda _l: None, wait=True, now=lambda: clock[0],
    )  # fmt: skip
    report = await run_job_async(load_spec(job), opts)
    db = tmp_path / "results.duckdb"
    assert report.batches_in_flight == 0
    assert _statuses(db) == {"done": 6}
    assert Decimal(standin.batches["batch-0001"]["usage"]["cost"]) > 0
    attempts, results = _money(db)
    assert attempts == results >= standin.total


def test_validate_marks_a_batch_tier_and_names_the_id_it_submits(tmp_path: Path) -> None:
    from batchroute.describe import describe_plan
    from batchroute.quote import offline_catalog

    write_jsonl(tmp_path / "in.jsonl", texts(2))
    job = job_dict(tmp_path)
    job["tiers"] = {"mid": {"models": ["openai/gpt-4o-mini"], "batch": True}}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job, sort_keys=False))
    db = tmp_path / "none.duckdb"
    lines = describe_plan(load_spec(tmp_path / "job.yaml"), db, offline_catalog(db))
    (tier,) = [ln for ln in lines if ln.startswith("tier mid:")]
    assert tier.startswith("tier mid: openai/gpt-4o-mini (batch: as openai/gpt-4o-mini,")
    assert "24 h" in tier


async def test_failed_items_collected_by_a_later_run_keep_their_share_beside_the_sync_retry(
    tmp_path: Path, serve: Any
) -> None:
    """Without --wait: the run that collects the batch retries its failed item synchronously;
    the record's result carries the batch share plus the retry, and attempts == results ==
    the bill."""
    bad = B.custom_id("t", "r00002")
    standin = BatchStandIn(fail_items={bad: "upstream error"})
    url = await serve(standin)
    job = _job(tmp_path, 6)
    first = await _run(job, url, wait=False)
    assert first.batches_in_flight == 1
    second = await _run(job, url, wait=False)
    assert second.batches_in_flight == 0
    db = tmp_path / "results.duckdb"
    assert _statuses(db) == {"done": 6}
    assert standin.sync_calls == 1
    assert _money(db) == (standin.total, standin.total)


async def test_a_5001_record_tier_is_two_batches_and_its_large_post_does_not_block(
    tmp_path: Path, serve: Any
) -> None:
    """5,000 + 1, every record done, DuckDB == the bill. The 5,000-request body is over 1 MiB:
    sent as bytes, aiohttp writes it in one go on the event loop and warns (ResourceWarning,
    an error under this suite's filterwarnings: the test fails on 94babb0)."""
    standin = BatchStandIn()
    report = await _run(_job(tmp_path, 5001, cap="100"), await serve(standin), wait=True)
    db = tmp_path / "results.duckdb"
    assert report.status is RunStatus.COMPLETED
    assert [len(orjson.loads(p)["requests"]) for p in standin.posts] == [5000, 1]
    assert max(len(p) for p in standin.posts) > 2**20
    assert _statuses(db) == {"done": 5001}
    assert _money(db) == (standin.total, standin.total)


async def test_the_dry_run_s_worst_case_counts_the_batch_item_twice(
    tmp_path: Path, serve: Any
) -> None:
    """An expired batch whose items ran (billed) but that shows no result lines: every item is
    resubmitted once, and billed again. So a record may pay two batch items before its
    synchronous chain, and the quote's worst case must hold both (before: one)."""
    from batchroute.catalog import Catalog
    from batchroute.lookup import MemoryLookup
    from batchroute.plan import Overrides, build_plan
    from batchroute.quote import quote
    from batchroute.reader import read_records
    from batchroute.types import ResumeState

    n = 6
    standin = BatchStandIn(expire=1, expire_answered=n, hide_expired=True)
    job = _job(tmp_path, n)
    report = await _run(job, await serve(standin), wait=True)
    assert report.status is RunStatus.COMPLETED
    assert len(standin.billed) == 2  # the expired batch and its resubmission, both billed
    assert standin.billed[0] == standin.billed[1] > 0
    db = tmp_path / "results.duckdb"
    assert _money(db)[0] >= standin.total  # both bills booked
    spec = load_spec(job)
    plan = build_plan(spec, Catalog.shipped(), ResumeState(), Overrides())
    intake = plan.intake(MemoryLookup())
    chain = lane = Decimal(0)
    for rec in read_records(spec.input, id_field=spec.id_field):
        item = intake.admit(rec).item
        assert item is not None
        chain += plan.worst_record(item)
        lane += B.worst_item(plan, item)
    q = quote(spec, db_path=tmp_path / "none.duckdb", today=utcnow().date())
    assert q.tiers["mid"].worst_usd >= chain + 2 * lane
