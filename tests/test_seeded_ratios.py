"""A cost ratio learnt in one run reserves the next run's first calls too (seed).

A model billed above its reservation (a provider priced above `/models`) teaches the run's
`Pricer` a ratio, and the model's later calls in that run are reserved at it. The ratio used to
last one run: a run resumed the same day (after a budget stop, a Ctrl-C, a raised cap) sent its
first wave at list price again, and the bill passed the cap. Now a run's start seeds the ratios
from the last days' attempts (`store.ratios`), read with the start-up state, in every start mode;
the dry run's worst case counts them too, and says so.

Real CLI in a subprocess against a stand-in on a loopback port, real DuckDB file.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml
from aiohttp import web
from factories import standin_job, texts, write_jsonl
from subprocs import query, run_cli, run_cli_async
from test_audit_cost_above import ListedFree, PricedAbove
from test_billing_standin import MODEL, StandIn
from test_reader_before_start import holding, let_go

from batchroute.runner.cost import RATIO_MEMORY_DAYS, learn_since
from batchroute.store import ResultStore
from batchroute.types import AttemptOutcome, AttemptRow, CostSource

N = 24
CAP1 = Decimal("0.01")
CONCURRENCY = 4


def _job(tmp_path: Path, base_url: str, cap: Decimal) -> Path:
    limits = {"concurrency": CONCURRENCY, "reconcile_wait_s": 0.5}
    return standin_job(tmp_path, base_url, model=MODEL, cap=cap, records=texts(N), limits=limits)


async def _run(job: Path) -> str:
    code, err = await asyncio.wait_for(run_cli_async("run", str(job)), timeout=300)
    assert code in (0, 3), err  # 3: the budget ran out (the cap is reached, as it should be)
    return err


async def _first_run(tmp_path: Path, standin: PricedAbove, base_url: str) -> tuple[Path, Decimal]:
    """Run 1 learns the ratio and stops at its cap; the cap of run 2: today's spend (as
    booked) plus room for 1.5 of the dearest calls billed, which fits four calls reserved at
    list price (each billed ~2.8x it) but only one at the ratio."""
    job = _job(tmp_path, base_url, CAP1)
    await _run(job)
    db = tmp_path / "results.duckdb"
    booked, dearest = query(db, "SELECT sum(cost_usd), max(cost_usd) FROM attempts")[0]
    assert booked >= standin.total  # run 1 booked its bill (money3's rule)
    assert any(b < 4 * CAP1 for b in standin.billed)  # it sent something
    pending = query(db, "SELECT count(*) FROM results WHERE status = 'pending'")[0][0]
    assert pending > 0, "run 1 finished the job: run 2 would have nothing to send"
    return db, booked + dearest * Decimal("1.5")


@pytest.mark.parametrize("listed", ["above", "free"])
async def test_a_run_resumed_the_same_day_reserves_its_first_wave_at_the_learnt_ratio(
    tmp_path: Path, serve: Any, listed: str
) -> None:
    """Run 1 (cap $0.01) learns the ratio and stops at the cap. Run 2, the same day with a
    raised cap, starts with four calls at once. Before: they were reserved at list price and
    all fit, billed ~2.8x that: the bill passed the raised cap (figures in the design notes).
    After: reserved at the learnt ratio; the bill stays under the cap and DuckDB has it all.
    `free`: listed at $0 and billed $0.005 a call; the floor learnt is the reservation."""
    standin = (
        PricedAbove("ok", generation_known=False)
        if listed == "above"
        else ListedFree("ok", generation_known=False)
    )
    base_url = await serve(standin)
    db, cap2 = await _first_run(tmp_path, standin, base_url)
    calls1 = len(standin.billed)
    err = await _run(_job(tmp_path, base_url, cap2))
    booked = query(db, "SELECT sum(cost_usd) FROM attempts")[0][0]
    assert len(standin.billed) > calls1, f"run 2 sent nothing: it proves nothing\n{err}"
    assert booked >= standin.total, (booked, standin.total)  # never under the bill
    assert standin.total <= cap2, (standin.total, cap2, len(standin.billed) - calls1)
    assert "learnt" in err, err  # the run says a ratio is in force


async def test_a_run_started_beside_a_reader_is_seeded_too(tmp_path: Path, serve: Any) -> None:
    """The same, with run 2 started while a read-only reader holds the file (the `held`
    start: it reads the start-up state read-only beside the reader). The reader lets go once
    run 2 has been billed for a call (the run writes its results only then)."""
    standin = PricedAbove("ok", generation_known=False)
    base_url = await serve(standin)
    db, cap2 = await _first_run(tmp_path, standin, base_url)
    calls1 = len(standin.billed)
    job = _job(tmp_path, base_url, cap2)
    with holding(db, "ro") as holder:
        run2 = asyncio.ensure_future(_run(job))
        deadline = asyncio.get_running_loop().time() + 120
        while len(standin.billed) == calls1 and not run2.done():
            assert asyncio.get_running_loop().time() < deadline, "run 2 never sent a call"
            await asyncio.sleep(0.05)
        await asyncio.to_thread(let_go, holder)
        err = await run2
    assert "open read-only" in err, err  # the held start it is about
    booked = query(db, "SELECT sum(cost_usd) FROM attempts")[0][0]
    assert len(standin.billed) > calls1, f"run 2 sent nothing: it proves nothing\n{err}"
    assert booked >= standin.total, (booked, standin.total)
    assert standin.total <= cap2, (standin.total, cap2, len(standin.billed) - calls1)


async def test_the_dry_run_quotes_the_learnt_ratio_and_says_so(tmp_path: Path, serve: Any) -> None:
    """After run 1 learnt ~2.8x, the dry run's worst case is the reservations the next run
    makes (at the ratio), not list price, and its text names the ratio in force. Against:
    the dry run of a copy of the same file whose attempts say no reservation."""
    standin = PricedAbove("ok", generation_known=False)
    base_url = await serve(standin)
    db, _ = await _first_run(tmp_path, standin, base_url)
    job = tmp_path / "job.yaml"
    (tmp_path / "copy").mkdir()
    shutil.copy(db, tmp_path / "copy" / db.name)
    with duckdb.connect(str(tmp_path / "copy" / db.name)) as con:
        con.execute("UPDATE attempts SET reserved_usd = NULL, listed_usd = NULL")
    spec = yaml.safe_load(job.read_text())
    spec["output"]["database"] = str(tmp_path / "copy" / db.name)
    copy_job = tmp_path / "copy" / "job.yaml"
    copy_job.write_text(yaml.safe_dump(spec, sort_keys=False))
    quotes = []
    for path in (copy_job, job):
        out = await asyncio.to_thread(run_cli, "run", str(path), "--dry-run", "--json")
        assert out.returncode == 0, out.stderr
        quotes.append(json.loads(out.stdout))
    listed, seeded = (Decimal(q["worst_usd"]) for q in quotes)
    assert quotes[0]["records"] == quotes[1]["records"] > 0
    assert seeded >= listed * 2, (seeded, listed)  # billed ~2.8x its reservation
    assert not any("learnt" in n for n in quotes[0]["notes"]), quotes[0]["notes"]
    text = await asyncio.to_thread(run_cli, "run", str(job), "--dry-run")
    assert "learnt cost ratios" in text.stdout, text.stdout
    assert f"{MODEL} x2." in text.stdout, text.stdout


def _call(key: str, model: str, at: datetime, cost: str, reserved: str | None) -> AttemptRow:
    return AttemptRow(
        "run1", "other-job", key, 1, "mid", model, at, 20, 200, AttemptOutcome.OK,
        cost_usd=Decimal(cost), cost_source=CostSource.OPENROUTER,
        reserved_usd=None if reserved is None else Decimal(reserved),
    )  # fmt: skip


def test_the_store_reads_the_largest_ratio_and_floor_of_the_window(tmp_path: Path) -> None:
    """Per model over every job: the call furthest above its reservation (the ratio from its
    own DECIMALs, rounded up to 0.001), and where $0 was reserved the largest cost. Calls
    before the window, at or under their reservation, or without one teach nothing."""
    today = datetime(2026, 12, 7, 9, 0)
    old = today - timedelta(days=RATIO_MEMORY_DAYS)  # the day before the window's first
    store = ResultStore(tmp_path / "r.duckdb")
    store.migrate()
    store.write([], [
        _call("a1", "m/a", today, "0.003", "0.001"),  # 3
        _call("a2", "m/a", today - timedelta(days=RATIO_MEMORY_DAYS - 1), "0.0070001", "0.002"),
        _call("a3", "m/a", old, "0.1", "0.001"),  # 100, a day too old
        _call("b1", "m/b", today, "0.001", "0.001"),  # at its reservation
        _call("b2", "m/b", today, "0.5", None),  # no reservation known
        _call("c1", "m/c", today, "0.005", "0"),
        _call("c2", "m/c", today, "0.007", "0"),
        _call("c3", "m/c", old, "0.009", "0"),
        _call("d1", "m/d", today, "1000000000000000", "0.000000000001"),  # the extremes
    ])  # fmt: skip
    state = store.resume_state(
        "t", final_statuses=[], day=today.date(), scope=None,
        learn_since=learn_since(today.date()),
    )  # fmt: skip
    assert state.ratios == {"m/a": Decimal("3.501"), "m/d": Decimal(10**27)}  # 3.50005, up
    assert state.floors == {"m/c": Decimal("0.007")}
    plain = store.resume_state("t", final_statuses=[], day=today.date(), scope=None)
    assert (plain.ratios, plain.floors) == ({}, {})  # not asked: not read


@dataclass
class GenerationOnly(StandIn):
    """Answers without `usage` (booked at the reservation), and /generation then says each
    call cost `factor` x its list price."""

    factor: int = 4

    def _bill(self, body: dict[str, Any], outcome: str) -> tuple[str, dict[str, Any]]:
        gid, usage = super()._bill(body, outcome)
        real = self.billed[-1] * self.factor
        self.billed[-1] = real
        self.generations[gid]["total_cost"] = float(real)
        self.generations[gid]["upstream_inference_cost"] = float(real)
        return gid, usage


async def test_a_generation_correction_above_the_reservation_seeds_the_next_start(
    tmp_path: Path, serve: Any
) -> None:
    """A call booked at its reservation (no usage) whose /generation figure is ~2.8x that:
    the correction lands in `attempts`, and the next start (here the dry run's) reserves the
    model at that ratio."""
    standin = GenerationOnly("no_usage")
    base_url = await serve(standin)
    job = _job(tmp_path, base_url, Decimal(10))
    spec = yaml.safe_load(job.read_text())
    spec["limits"] = {**spec["limits"], "concurrency": 1, "reconcile_wait_s": 30}
    job.write_text(yaml.safe_dump(spec, sort_keys=False))
    write_jsonl(tmp_path / "in.jsonl", texts(1))
    await _run(job)
    db = tmp_path / "results.duckdb"
    cost, reserved, source = query(db, "SELECT cost_usd, reserved_usd, cost_source FROM attempts")[
        0
    ]
    assert source == "generation", source  # the correction landed
    assert cost == standin.total > 2 * reserved
    out = await asyncio.to_thread(run_cli, "run", str(job), "--dry-run", "--json")
    assert out.returncode == 0, out.stderr
    notes = json.loads(out.stdout)["notes"]
    assert any(f"{MODEL} x2." in n for n in notes), notes


@dataclass
class GatedGenerationOnly(GenerationOnly):
    """As `GenerationOnly`, and call k is answered only once GET /generation has answered for
    call k-1 (with a deadline): the run cannot outpace its own corrections, so call k+1 is
    reserved after the correction of call k-1 reached the run."""

    served: set[str] = field(default_factory=set)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def generation(self, request: web.Request) -> web.Response:
        response = await super().generation(request)
        if response.status == 200:
            async with self.changed:
                self.served.add(request.query.get("id", ""))
                self.changed.notify_all()
        return response

    async def chat(self, request: web.Request) -> web.StreamResponse:
        previous = f"gen-{len(self.generations):06d}"  # the last one billed before this call
        if self.generations:
            async with self.changed:
                done = self.changed.wait_for(lambda: previous in self.served)
                await asyncio.wait_for(done, timeout=60)
        return await super().chat(request)


async def test_a_generation_correction_above_the_reservation_raises_the_runs_later_ones(
    tmp_path: Path, serve: Any
) -> None:
    """In the same run: each answer says no cost (booked at the reservation) and /generation
    later says ~2.8x it. Before: the run's later calls stayed reserved at list price (the
    Reconciler taught the Pricer nothing). After: once a correction lands, the model's later
    calls are reserved at its ratio."""
    standin = GatedGenerationOnly("no_usage")
    base_url = await serve(standin)
    job = _job(tmp_path, base_url, Decimal(10))
    spec = yaml.safe_load(job.read_text())
    spec["limits"] = {**spec["limits"], "concurrency": 1, "reconcile_wait_s": 30}
    job.write_text(yaml.safe_dump(spec, sort_keys=False))
    write_jsonl(tmp_path / "in.jsonl", texts(6))
    await _run(job)
    db = tmp_path / "results.duckdb"
    rows = query(db, "SELECT reserved_usd, cost_usd FROM attempts ORDER BY started_at")
    assert len(rows) == 6, rows
    assert all(cost > 2 * reserved for reserved, cost in rows[:2]), rows  # at list price
    assert any(reserved > 2 * rows[0][0] for reserved, _ in rows[2:]), rows
    assert sum(cost for _, cost in rows) >= standin.total
