"""The cap's edges (issue 8): records that do not fit wait, poison records fail at once, retired
models are never called, the API key's own limit rules when it is lower, and the simulator's
billing of abandoned, usage-less and BYOK generations ends up in DuckDB.
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from factories import job_dict, make_spec, texts, write_jsonl
from subprocs import job_endpoint, query, run_cli, simulator

from batchroute.runner import RunOptions, run_job_async
from batchroute.simulator import Scenario, SimulatorThread
from batchroute.types import RunStatus

MINI = "openai/gpt-4o-mini"


async def _no_sleep(_s: float) -> None:
    return None


def _opts(sim: SimulatorThread, db: Path, logs: list[str] | None = None) -> RunOptions:
    return RunOptions(
        api_key="sk-or-v1-test",
        base_url=sim.base_url,
        db_path=db,
        handle_signals=False,
        quiet=True,
        sleep=_no_sleep,
        jitter_seed=0,
        log=(logs if logs is not None else []).append,
    )


def _total(db: Path, table: str = "attempts") -> Decimal:
    return Decimal(query(db, f"SELECT COALESCE(SUM(cost_usd), 0) FROM {table}")[0][0])


def _ledger(sim: SimulatorThread) -> Decimal:
    return Decimal(sim.ledger()["total_cost_usd"])


def test_poison_record_fails_at_once_and_the_rest_runs(tmp_path: Path) -> None:
    """One 400,000-character record whose worst case is more than the whole cap, among 50
    small ones: the 50 are done, the big one fails with both figures, exit 4 (not 3 forever)."""
    records = texts(50)
    records.insert(17, {"id": "poison", "text": "x" * 400_000, "target_lang": "French"})
    write_jsonl(tmp_path / "in.jsonl", records)
    with simulator() as sim:
        job = job_dict(
            tmp_path,
            tiers={"mid": [MINI]},
            quality=[],
            budget={"daily_usd": "0.05"},
            endpoint=job_endpoint(sim),
        )
        path = tmp_path / "job.yaml"
        path.write_text(yaml.safe_dump(job))
        out = run_cli("run", str(path))
        db = tmp_path / "results.duckdb"
        statuses = dict(query(db, "SELECT status, count(*) FROM results GROUP BY 1"))
        poison = query(
            db, "SELECT status, error_type, error_message FROM results WHERE record_key = ?",
            ["poison"],
        )  # fmt: skip
        called = query(db, "SELECT count(*) FROM attempts WHERE record_key = 'poison'")[0][0]
    assert out.returncode == 4, out.stdout + out.stderr
    assert statuses == {"done": 50, "failed": 1}
    ((status, error_type, message),) = poison
    assert (status, error_type) == ("failed", "exceeds_daily_cap")
    assert "$0.05" in message, message
    assert "worst case $0.06" in message, message
    assert called == 0  # never sent


async def test_records_that_do_not_fit_wait_and_smaller_ones_go_on(tmp_path: Path) -> None:
    """Big records (worst case under the cap, but more than is left) stay pending with the
    reason; small ones after them are still sent until nothing left fits; exit status 3."""
    records = []
    for i, r in enumerate(texts(120)):
        if i % 3 == 0:
            r["text"] = "long sentence to translate. " * 2_000  # ~56k chars: worst ≈ $0.0087
        records.append(r)
    write_jsonl(tmp_path / "in.jsonl", records)
    cap = Decimal("0.02")
    spec = make_spec(
        tmp_path,
        tiers={"mid": [MINI]},
        quality=[],
        limits={"concurrency": 4},
        budget={"daily_usd": str(cap)},
    )
    db = tmp_path / "results.duckdb"
    with SimulatorThread(Scenario(), seed=1) as sim:
        report = await run_job_async(spec, _opts(sim, db))
        billed = _ledger(sim)
    assert report.status is RunStatus.BUDGET_EXHAUSTED
    rows = query(
        db,
        "SELECT length(record_key) > 0, status, error_type, count(*) FROM results GROUP BY ALL",
    )
    by = {(s, e): n for _, s, e, n in rows}
    small_done = query(
        db,
        "SELECT count(*) FROM results WHERE status = 'done' AND "
        "CAST(substr(record_key, 2) AS INTEGER) % 3 <> 0",
    )[0][0]
    big_pending = query(
        db,
        "SELECT count(*) FROM results WHERE status = 'pending' AND error_type = "
        "'awaiting_budget' AND CAST(substr(record_key, 2) AS INTEGER) % 3 = 0",
    )[0][0]
    assert big_pending > 0, by
    assert small_done == 80, by  # every small record was still sent and done
    assert billed <= cap
    assert _total(db) == billed


async def test_a_model_missing_from_the_live_catalogue_is_dropped(tmp_path: Path) -> None:
    """A retired model at the head of a chain is never called (and not reserved at the
    dearest price, which ended runs at $0 spent): one warning, the chain goes on."""
    write_jsonl(tmp_path / "in.jsonl", texts(20))
    spec = make_spec(
        tmp_path,
        tiers={"mid": ["anthropic/claude-3.5-sonnet", MINI]},
        quality=[],
        budget={"daily_usd": "0.05"},
    )
    db = tmp_path / "results.duckdb"
    logs: list[str] = []
    with SimulatorThread(Scenario(), seed=0) as sim:
        report = await run_job_async(spec, _opts(sim, db, logs))
    assert report.status is RunStatus.COMPLETED
    assert report.tiers["mid"] == (MINI,)
    assert query(db, "SELECT DISTINCT model FROM attempts") == [(MINI,)]
    warned = [line for line in logs if "claude-3.5-sonnet" in line]
    assert len(warned) == 1, logs
    assert "dropped" in warned[0]


async def test_the_api_keys_own_limit_rules_when_it_is_lower(tmp_path: Path) -> None:
    """Another job already spent most of the key's limit: the run stays under what the key
    has left (no 402s), says so at the start, and leaves the rest pending (exit 3)."""
    write_jsonl(tmp_path / "in.jsonl", texts(400))
    spec = make_spec(tmp_path, tiers={"mid": [MINI]}, quality=[], budget={"daily_usd": "1.00"})
    db = tmp_path / "results.duckdb"
    logs: list[str] = []
    key_limit = Decimal("0.01")
    with SimulatorThread(Scenario.from_dict({"key_limit_usd": float(key_limit)}), seed=0) as sim:
        report = await run_job_async(spec, _opts(sim, db, logs))
        billed = _ledger(sim)
    assert report.status is RunStatus.BUDGET_EXHAUSTED
    assert billed <= key_limit
    assert query(db, "SELECT count(*) FROM attempts WHERE http_status = 402")[0][0] == 0
    assert any("the API key has only $0.0100 left, which rules" in line for line in logs), logs
    assert _total(db) == billed


async def test_simulator_bills_abandoned_generations_and_duckdb_holds(tmp_path: Path) -> None:
    """Our own simulator bills a generation the client gave up on (after its latency): the
    database must never say less than the ledger, and the cap holds."""
    write_jsonl(tmp_path / "in.jsonl", texts(80))
    cap = Decimal("0.01")
    spec = make_spec(
        tmp_path,
        tiers={"mid": [MINI]},
        quality=[],
        limits={"concurrency": 8, "timeout_s": 0.05, "stream": "never"},
        budget={"daily_usd": str(cap)},
    )
    db = tmp_path / "results.duckdb"
    with SimulatorThread(Scenario.from_dict({"latency_ms": 300}), seed=0) as sim:
        report = await run_job_async(spec, _opts(sim, db))
        attempts = query(db, "SELECT count(*) FROM attempts")[0][0]
        # The simulator bills each abandoned call once its latency has passed.
        deadline = time.monotonic() + 30
        while sim.ledger()["calls"] < attempts and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)  # waiting on another thread's state: no event to await
        billed = _ledger(sim)
        calls = sim.ledger()["calls"]
    assert calls == attempts > 0
    # Every call timed out: the cap, or the outage breaker (exit 6), stopped the run first.
    assert report.status in (RunStatus.BUDGET_EXHAUSTED, RunStatus.UNAVAILABLE)
    assert billed <= cap
    assert _total(db) >= billed


@pytest.mark.parametrize("stream", ["never", "always"])
async def test_simulator_answers_without_usage_are_reconciled(tmp_path: Path, stream: str) -> None:
    """Answers without `usage` keep their reservation while /generation says 404 (for a long
    time); the next run, once /generation answers, books the real costs: DuckDB == ledger."""
    write_jsonl(tmp_path / "in.jsonl", texts(40))
    spec = make_spec(
        tmp_path,
        tiers={"mid": [MINI]},
        quality=[],
        limits={"stream": stream, "reconcile_wait_s": 0},
        budget={"daily_usd": "1"},
    )
    db = tmp_path / "results.duckdb"
    late = {"rate_no_usage": 0.5, "generation_delay_s": 3600}
    with SimulatorThread(Scenario.from_dict(late), seed=3) as sim:
        first = await run_job_async(spec, _opts(sim, db))
        billed = _ledger(sim)
        reserved = query(db, "SELECT count(*) FROM attempts WHERE cost_source = 'reserved'")
        assert first.status is RunStatus.COMPLETED
        assert reserved[0][0] > 0
        assert _total(db) > billed  # overcount while the bill is unknown, never under
        sim.set_scenario(Scenario.from_dict({"generation_delay_s": 0}))
        second = await run_job_async(spec, _opts(sim, db))
        assert _ledger(sim) == billed  # the second run sent nothing new
    assert second.counts.done == 0
    assert query(db, "SELECT count(*) FROM attempts WHERE cost_source = 'reserved'")[0][0] == 0
    assert _total(db) == billed == _total(db, "results")


async def test_simulator_byok_and_online_search_are_booked_in_full(tmp_path: Path) -> None:
    """BYOK answers cost the fee plus the upstream charge, `:online` answers the search fee
    too; the reservation covers both, and DuckDB equals the ledger."""
    write_jsonl(tmp_path / "in.jsonl", texts(30))
    spec = make_spec(
        tmp_path,
        tiers={"mid": [f"{MINI}:online"]},
        quality=[],
        budget={"daily_usd": "0.2"},
    )
    db = tmp_path / "results.duckdb"
    with SimulatorThread(Scenario.from_dict({"byok": True}), seed=0) as sim:
        report = await run_job_async(spec, _opts(sim, db))
        billed = _ledger(sim)
    assert report.status is RunStatus.BUDGET_EXHAUSTED  # searches cost $0.02 each
    assert billed <= Decimal("0.2")
    assert _total(db) == billed
    over = query(db, "SELECT count(*) FROM attempts WHERE cost_usd > reserved_usd")[0][0]
    assert over == 0


@pytest.mark.parametrize("stream", ["never", "always"])
async def test_errors_inside_a_200_are_reserved_then_reconciled(
    tmp_path: Path, stream: str
) -> None:
    """An error inside a 200 says no cost: it may have been billed, so it is booked at its
    reservation until /generation says what it cost ($0 under zero-completion insurance)."""
    write_jsonl(tmp_path / "in.jsonl", texts(60))
    spec = make_spec(
        tmp_path,
        tiers={"mid": [MINI]},
        quality=[],
        limits={"stream": stream},
        budget={"daily_usd": "1"},
    )
    db = tmp_path / "results.duckdb"
    faults = {"rate_200_error": 0.3, "rate_reset": 0.1, "generation_delay_s": 0}
    with SimulatorThread(Scenario.from_dict(faults), seed=5) as sim:
        report = await run_job_async(spec, _opts(sim, db))
        billed = _ledger(sim)
    kinds = dict(query(db, "SELECT cost_source, count(*) FROM attempts GROUP BY 1"))
    # 200-body errors and cut connections are availability failures: a record whose whole
    # chain had them stays pending (status unavailable); either way the books hold.
    assert report.status in (RunStatus.COMPLETED, RunStatus.UNAVAILABLE)
    assert kinds.get("generation", 0) > 0, kinds  # reserved first, then fixed
    assert "reserved" not in kinds, kinds
    assert _total(db) == billed == _total(db, "results")
