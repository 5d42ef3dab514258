"""Money end to end (issue 4): the cap holds, is used, and every dollar matches the provider.

Real parts only: the simulator on a loopback port (its own thread and event loop), real DuckDB
files, the real CLI in a subprocess. Runner sleeps are injected; the simulator's latency is real
but tiny (it keeps many calls in flight at once).
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest
from factories import make_spec, texts, write_jsonl

from batchroute.runner import RunOptions, run_job_async
from batchroute.simulator import Scenario, SimulatorThread
from batchroute.types import RunStatus

MINI = "openai/gpt-4o-mini"
KEY = "sk-or-v1-test"


async def _no_sleep(_s: float) -> None:
    return None


def _opts(sim: SimulatorThread, db: Path, logs: list[str] | None = None, **kw: Any) -> RunOptions:
    sink = logs if logs is not None else []
    kw.setdefault("base_url", sim.base_url)
    return RunOptions(
        api_key=KEY,
        db_path=db,
        handle_signals=False,
        quiet=True,
        sleep=_no_sleep,
        jitter_seed=0,
        log=sink.append,
        **kw,
    )


def _q(db: Path, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def _db_total(db: Path) -> Decimal:
    return Decimal(_q(db, "SELECT COALESCE(SUM(cost_usd), 0) FROM attempts")[0][0])


def _ledger_total(sim: SimulatorThread) -> Decimal:
    return Decimal(sim.ledger()["total_cost_usd"])


# ---------------------------------------------------------------------------------------------
# 1. Stress: concurrency 256, random lengths, a cap far below the job's cost, many seeds.
# ---------------------------------------------------------------------------------------------

STRESS_TRIALS = 10
STRESS_CAP = Decimal("0.05")
STRESS_RECORDS = 1_500


@dataclass
class Trial:
    seed: int
    spent: Decimal
    ledger: Decimal
    status: RunStatus
    done: int
    pending: int
    max_in_flight: int


def _peak_in_flight(db: Path) -> int:
    """Most calls in flight at once, from the attempts' start times and latencies."""
    events: list[tuple[float, int]] = []
    for started, latency_ms in _q(db, "SELECT started_at, latency_ms FROM attempts"):
        t = started.timestamp()
        events += [(t, 1), (t + latency_ms / 1000, -1)]
    peak = cur = 0
    for _, step in sorted(events, key=lambda e: (e[0], e[1])):
        cur += step
        peak = max(peak, cur)
    return peak


def _stress_scenario() -> Scenario:
    return Scenario.from_dict(
        {
            "latency_ms": {"dist": "lognormal", "median": 20, "sigma": 0.6},
            # Wide: most answers short, a long tail up to max_tokens (billed as "length").
            "completion_tokens": {"dist": "lognormal", "median": 60, "sigma": 1.0},
        }
    )


@pytest.mark.slow
async def test_cap_holds_and_is_used_under_concurrency_256(tmp_path: Path) -> None:
    """Over many seeded trials: spend ≤ cap, ≥ 90 % of it used, DuckDB total == ledger total."""
    write_jsonl(tmp_path / "in.jsonl", texts(STRESS_RECORDS))
    trials: list[Trial] = []
    for seed in range(STRESS_TRIALS):
        d = tmp_path / f"trial{seed}"
        d.mkdir()
        spec = make_spec(
            d,
            input=str(tmp_path / "in.jsonl"),
            tiers={"mid": [MINI]},
            request={"max_tokens": 256},
            quality=[],  # every answer counts: this test is about money, not escalation
            limits={"concurrency": 256, "queue_size": 512},
            budget={"daily_usd": str(STRESS_CAP)},
        )
        db = d / "results.duckdb"
        with SimulatorThread(_stress_scenario(), seed=seed) as sim:
            report = await run_job_async(spec, _opts(sim, db))
            ledger = _ledger_total(sim)
        spent = _db_total(db)
        (done,) = _q(db, "SELECT count(*) FROM results WHERE status = 'done'")[0]
        (pending,) = _q(db, "SELECT count(*) FROM results WHERE status = 'pending'")[0]
        (not_final,) = _q(
            db, "SELECT count(*) FROM results WHERE status NOT IN ('done', 'pending')"
        )[0]
        assert not_final == 0
        trials.append(Trial(seed, spent, ledger, report.status, done, pending, _peak_in_flight(db)))
        assert report.status is RunStatus.BUDGET_EXHAUSTED, seed
        assert spent <= STRESS_CAP, (seed, spent)
        assert spent == ledger, (seed, spent, ledger)  # exact, Decimal
        assert spent == report.counts.cost_usd
        assert done + pending == STRESS_RECORDS, (seed, done, pending)
        assert pending > 0
        (run_status, run_cost) = _q(db, "SELECT status, cost_usd FROM runs")[0]
        assert run_status == "budget_exhausted"
        assert Decimal(run_cost) == spent
    used = [t.spent / STRESS_CAP for t in trials]
    print(
        "cap use per trial: "
        + ", ".join(f"{u:.2%}" for u in used)
        + f"; min {min(used):.2%}, mean {sum(used) / len(used):.2%}; "
        + f"calls done per trial {[t.done for t in trials]}; "
        + f"peak in flight {[t.max_in_flight for t in trials]}"
    )
    assert max(t.max_in_flight for t in trials) >= 128  # the cap was tested under real overlap
    assert min(used) >= Decimal("0.90"), used


# ---------------------------------------------------------------------------------------------
# 2. Two runs on one database: raised cap, or the next UTC day; nothing is paid twice.
# ---------------------------------------------------------------------------------------------

DAY1 = datetime(2026, 5, 28, 22, 0)
DAY2 = datetime(2026, 5, 29, 6, 0)


def _small_job(tmp_path: Path, n: int, cap: str, **overrides: Any) -> Any:
    tmp_path.mkdir(parents=True, exist_ok=True)
    write_jsonl(tmp_path / "in.jsonl", texts(n))
    base: dict[str, Any] = {
        "tiers": {"mid": [MINI]},
        "request": {"max_tokens": 128},
        "quality": [],
        "limits": {"concurrency": 32},
        "budget": {"daily_usd": cap},
    }
    return make_spec(tmp_path, **{**base, **overrides})


def _assert_paid_once(db: Path, sim: SimulatorThread, n: int) -> None:
    """Every record done, each with exactly one ok attempt and one billed generation."""
    rows = _q(db, "SELECT status, count(*) FROM results GROUP BY ALL")
    assert dict(rows) == {"done": n}
    per_key = _q(
        db,
        "SELECT record_key, count(*) FILTER (WHERE outcome = 'ok'), count(generation_id), "
        "count(DISTINCT generation_id) FROM attempts GROUP BY record_key",
    )
    assert len(per_key) == n
    assert all(ok == 1 and g == 1 and dg == 1 for _, ok, g, dg in per_key)
    led = sim.ledger()
    gens = {g["id"]: Decimal(g["cost_usd"]) for g in led["generations"]}
    assert len(gens) == n == led["calls"]  # one billed generation per record, no more
    db_gens = dict(_q(db, "SELECT generation_id, cost_usd FROM attempts"))
    assert {k: Decimal(v) for k, v in db_gens.items()} == gens
    assert _db_total(db) == _ledger_total(sim)
    # results.cost_usd is the sum over the record's attempts (across both runs).
    mismatched = _q(
        db,
        "SELECT r.record_key FROM results r JOIN (SELECT record_key, sum(cost_usd) AS c "
        "FROM attempts GROUP BY ALL) a USING (record_key) WHERE r.cost_usd <> a.c",
    )
    assert mismatched == []


async def test_second_run_with_a_raised_cap_finishes_without_paying_twice(tmp_path: Path) -> None:
    spec = _small_job(tmp_path, 200, "0.004")
    db = tmp_path / "results.duckdb"
    with SimulatorThread(Scenario(), seed=7) as sim:
        first = await run_job_async(spec, _opts(sim, db))
        assert first.status is RunStatus.BUDGET_EXHAUSTED
        assert 0 < first.counts.done < 200
        assert first.counts.done + first.counts.pending == 200
        assert _db_total(db) <= Decimal("0.004")
        second = await run_job_async(spec, _opts(sim, db, budget_usd=Decimal("1")))
        assert second.status is RunStatus.COMPLETED
        assert second.counts.skipped == first.counts.done
        assert second.counts.done == 200 - first.counts.done
        _assert_paid_once(db, sim, 200)
    runs = _q(db, "SELECT status, cost_usd FROM runs ORDER BY started_at")
    assert [r[0] for r in runs] == ["budget_exhausted", "completed"]
    assert sum(Decimal(r[1]) for r in runs) == _db_total(db)


async def test_next_utc_day_gets_a_fresh_cap_and_continues(tmp_path: Path) -> None:
    spec = _small_job(tmp_path, 200, "0.008")
    db = tmp_path / "results.duckdb"
    with SimulatorThread(Scenario(), seed=8) as sim:
        day1 = await run_job_async(spec, _opts(sim, db, now=lambda: DAY1))
        assert day1.status is RunStatus.BUDGET_EXHAUSTED
        spent1 = _db_total(db)
        assert Decimal("0.0072") <= spent1 <= Decimal("0.008")
        # Same day again: the day's spend is carried in from the file. At most a record whose
        # worst case still fits the crumbs may go (a shorter prompt than the one that stopped
        # day 1); the cap still holds.
        again = await run_job_async(spec, _opts(sim, db, now=lambda: DAY1))
        assert again.status is RunStatus.BUDGET_EXHAUSTED
        assert again.counts.done <= 2
        assert spent1 <= _db_total(db) <= Decimal("0.008")
        day2 = await run_job_async(spec, _opts(sim, db, now=lambda: DAY2))
        assert day2.counts.done == 200 - day1.counts.done - again.counts.done
        assert day2.status is RunStatus.COMPLETED, day2.notes
        _assert_paid_once(db, sim, 200)
    by_day = _q(db, "SELECT day, cost_usd FROM daily_spend WHERE scope = '*' ORDER BY day")
    assert [d for d, _ in by_day] == [DAY1.date(), DAY2.date()]
    assert all(Decimal(c) <= Decimal("0.008") for _, c in by_day)


def _cli(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI; a `run --simulate` writes to the job's own database here (`--db`), since these
    tests read it (without --db a simulated run has its own file, issue 9)."""
    argv = [str(a) for a in args]
    if argv[:1] == ["run"] and "--simulate" in argv and "--db" not in argv:
        job = Path(argv[1])
        argv += ["--db", str(job.parent / "results.duckdb")]
    return subprocess.run(
        [sys.executable, "-m", "batchroute", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).parents[1])},
    )


def _sim_billed(stderr: str) -> Decimal:
    """The `--simulate` run's own ledger total, from its stderr summary."""
    line = next(x for x in stderr.splitlines() if x.startswith("simulator ledger:"))
    return Decimal(line.split("$")[1].split()[0])


def test_cli_budget_flag_raises_the_cap_for_one_run(tmp_path: Path) -> None:
    """Exit 3 at the cap, then `--budget` finishes the job: exit 0, no record paid twice."""
    _small_job(tmp_path, 120, "0.002")
    job, db = tmp_path / "job.yaml", tmp_path / "results.duckdb"
    first = _cli("run", job, "--simulate")
    assert first.returncode == 3, first.stderr
    assert "budget_exhausted" in first.stdout
    assert "daily budget reached" in first.stderr
    billed1 = _sim_billed(first.stderr)
    assert billed1 == _db_total(db) <= Decimal("0.002")
    second = _cli("run", job, "--simulate", "--budget", "0.5")
    assert second.returncode == 0, second.stderr
    billed2 = _sim_billed(second.stderr)
    assert billed1 + billed2 == _db_total(db)
    assert dict(_q(db, "SELECT status, count(*) FROM results GROUP BY ALL")) == {"done": 120}
    dup = _q(
        db,
        "SELECT record_key FROM attempts WHERE outcome = 'ok' GROUP BY ALL HAVING count(*) > 1",
    )
    assert dup == []


# ---------------------------------------------------------------------------------------------
# 3. The dry-run quote's worst case bounds what the run spends, escalations included.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "scenario"),
    [
        ("default", {}),  # normal(120, 60) lengths against max_tokens 128: many "length"
        ("lengths", {"completion_tokens": {"dist": "lognormal", "median": 100, "sigma": 1.2}}),
        ("empty+length", {"rate_empty": 0.3, "completion_tokens": {"mean": 120, "sd": 20}}),
        ("all-fail", {"rate_empty": 1.0}),
        # Billed but undelivered answers, retried: their cost is recovered via /generation.
        ("undelivered", {"rate_malformed": 0.2, "rate_reset": 0.2, "generation_delay_s": 0}),
        ("all-undelivered", {"rate_malformed": 1.0, "generation_delay_s": 0}),
        (
            "faults",
            {
                "rate_429": 0.1,
                "rate_502": 0.1,
                "rate_choice_error": 0.1,
                "rate_200_error": 0.05,
                "rate_empty": 0.1,
                # The run's sleep is a no-op while the simulator's clock is real: with the
                # default 0.5 s delay an in-body error late in the run is still 404 when the
                # end-of-run reconcile polls, and its reservation (rightly) stays, an overcount
                # the next run's start fixes: not what this test measures.
                "generation_delay_s": 0,
            },
        ),
    ],
)
async def test_quote_worst_case_bounds_actual_spend(
    tmp_path: Path, name: str, scenario: dict[str, Any]
) -> None:
    from batchroute.quote import quote

    tiers = {"mid": [MINI, "google/gemini-2.0-flash-001"], "standard": ["openai/gpt-4o"]}
    spec = _small_job(
        tmp_path,
        120,
        "100",
        tiers=tiers,
        quality=["empty", "length"],
        request={"max_tokens": 128},
        limits={"concurrency": 32, "max_escalations": 1},
    )
    q = quote(spec, db_path=tmp_path / "none.duckdb", today=DAY1.date())
    assert q.records == 120
    db = tmp_path / "results.duckdb"
    with SimulatorThread(Scenario.from_dict(scenario), seed=3) as sim:
        report = await run_job_async(spec, _opts(sim, db, now=lambda: DAY1))
        billed = _ledger_total(sim)
    spent = _db_total(db)
    assert billed == spent
    escalated = _q(db, "SELECT count(*) FROM results WHERE escalations > 0")[0][0]
    print(
        f"{name}: quote worst {q.worst_usd}, expected {q.expected_usd}, actual {spent}; "
        f"{escalated} escalated; {report.counts}"
    )
    # A record whose whole chain was down (cut connections) stays pending for the next run.
    assert report.counts.done + report.counts.failed + report.counts.pending == 120
    assert spent <= q.worst_usd
    if name not in ("default", "all-undelivered"):  # cut-off bodies are no quality failure
        assert escalated > 0  # the scenario really exercised escalation


# ---------------------------------------------------------------------------------------------
# 4. A 402 from the provider (key limit reached) ends dispatch: budget_exhausted, exit 3.
# ---------------------------------------------------------------------------------------------


def test_402_stops_the_run_with_exit_3(tmp_path: Path) -> None:
    """Out of credits mid-run (the key was drained elsewhere, after our last GET /key)."""
    _small_job(tmp_path, 150, "5", limits={"concurrency": 8})
    scenario = tmp_path / "limit.yaml"
    scenario.write_text(f"script: {{'*': {['ok'] * 40 + ['402']}}}\n")
    job, db = tmp_path / "job.yaml", tmp_path / "results.duckdb"
    r = _cli("run", job, "--simulate", "--scenario", scenario)
    assert r.returncode == 3, r.stderr
    assert "budget_exhausted" in r.stdout
    assert "Insufficient credits" in r.stderr
    assert KEY not in r.stderr + r.stdout
    billed = _sim_billed(r.stderr)
    assert billed == _db_total(db)
    statuses = dict(_q(db, "SELECT status, count(*) FROM results GROUP BY ALL"))
    assert statuses["pending"] > 0
    assert set(statuses) <= {"done", "pending"}
    assert statuses["done"] + statuses["pending"] == 150
    assert _q(db, "SELECT status FROM runs") == [("budget_exhausted",)]
    # Dispatch stopped at once: the one scripted 402, and no call after it.
    n402 = _q(db, "SELECT count(*) FROM attempts WHERE http_status = 402")[0][0]
    assert n402 == 1
    assert _q(db, "SELECT count(*) FROM attempts")[0][0] <= 41 + 8  # + those in flight


def test_the_key_limit_rules_before_any_402(tmp_path: Path) -> None:
    """The simulator's key has $0.002 left: GET /key says so at the start, the run stays
    under it and never sees a 402 (before issue 8 it spent up to the key's 402)."""
    _small_job(tmp_path, 150, "5", limits={"concurrency": 8})
    scenario = tmp_path / "limit.yaml"
    scenario.write_text("key_limit_usd: 0.002\n")
    job, db = tmp_path / "job.yaml", tmp_path / "results.duckdb"
    r = _cli("run", job, "--simulate", "--scenario", scenario)
    assert r.returncode == 3, r.stderr
    assert "the API key has only $0.002000 left, which rules" in r.stderr
    billed = _sim_billed(r.stderr)
    assert billed == _db_total(db) <= Decimal("0.002")
    assert _q(db, "SELECT count(*) FROM attempts WHERE http_status = 402")[0][0] == 0


# ---------------------------------------------------------------------------------------------
# 5. Price catalogue: live /models cached in DuckDB; else the cached copy; else the shipped one.
# ---------------------------------------------------------------------------------------------


class _Proxy:
    """An OpenRouter stand-in that forwards chat to the simulator but serves its own /models."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.models: bytes | None = None  # None: /models answers 500

    def app(self) -> Any:
        from aiohttp import ClientSession, web

        async def chat(request: web.Request) -> web.Response:
            async with (
                ClientSession() as s,
                s.post(
                    f"{self.upstream}/chat/completions",
                    data=await request.read(),
                    headers={"Authorization": request.headers["Authorization"]},
                ) as resp,
            ):
                return web.Response(
                    body=await resp.read(), status=resp.status, content_type="application/json"
                )

        async def models(_request: web.Request) -> web.Response:
            if self.models is None:
                return web.json_response({"error": {"code": 500, "message": "down"}}, status=500)
            return web.Response(body=self.models, content_type="application/json")

        app = web.Application()
        app.router.add_post("/api/v1/chat/completions", chat)
        app.router.add_get("/api/v1/models", models)
        return app


def _catalog_with(model: str, **pricing: str) -> bytes:
    from batchroute.catalog import Catalog

    doc = json.loads(Catalog.shipped().raw)
    for m in doc["data"]:
        if m["id"] == model:
            m["pricing"].update(pricing)
    return json.dumps(doc).encode()


async def test_catalog_is_fetched_cached_and_falls_back_with_its_age(tmp_path: Path) -> None:
    from aiohttp.test_utils import TestServer

    spec = _small_job(tmp_path, 20, "0.01")
    db = tmp_path / "results.duckdb"
    with SimulatorThread(Scenario(), seed=1) as sim:
        # a) Straight from the simulator: /models is fetched and cached with its fetch time.
        logs: list[str] = []
        ok = await run_job_async(spec, _opts(sim, db, logs, now=lambda: DAY1))
        assert ok.status is RunStatus.COMPLETED
        assert not [n for n in ok.notes if "catalogue" in n]
        [(source, fetched)] = _q(db, "SELECT source, fetched_at FROM catalog_cache")
        assert source == sim.base_url
        assert fetched == DAY1

        proxy = _Proxy(sim.base_url)
        server = TestServer(proxy.app(), host="127.0.0.1")
        await server.start_server()
        try:
            base = str(server.make_url("/api/v1"))
            # b) The live catalogue is what prices the run: make gpt-4o-mini so dear that one
            #    call's worst case exceeds the whole cap. Every record fails at once with
            #    exceeds_daily_cap, nothing is sent; that copy is cached.
            proxy.models = _catalog_with(MINI, completion="0.01")
            spec2 = _small_job(tmp_path / "b", 20, "0.01", name="b", output={"database": str(db)})
            dear = await run_job_async(spec2, _opts(sim, db, base_url=base, now=lambda: DAY1))
            assert dear.status is RunStatus.COMPLETED
            assert (dear.counts.done, dear.counts.failed) == (0, 20)
            too_big = "SELECT count(*) FROM results WHERE error_type = 'exceeds_daily_cap'"
            assert _q(db, too_big) == [(20,)]
            assert _q(db, "SELECT source FROM catalog_cache") == [(base,)]
            # c) /models fails three days later: the cached (dear) copy is used, with its age.
            proxy.models = None
            logs = []
            later = datetime(2026, 5, 31, 22, 0)
            cached = await run_job_async(
                spec2, _opts(sim, db, logs, base_url=base, now=lambda: later, retry_failed=True)
            )
            assert cached.status is RunStatus.COMPLETED
            assert (cached.counts.done, cached.counts.failed) == (0, 20)
            [note] = [n for n in cached.notes if "catalogue" in n]
            assert "cached catalogue, 3 days old" in note
            assert any(note in line for line in logs)  # the warning is shown, not just kept
            # d) No cache (a new database) and /models down: the shipped catalogue, dated.
            fresh_db = tmp_path / "fresh.duckdb"
            logs = []
            shipped = await run_job_async(spec2, _opts(sim, fresh_db, logs, base_url=base))
            assert shipped.status is RunStatus.COMPLETED
            [note] = [n for n in shipped.notes if "catalogue" in n]
            assert "shipped catalogue of 2026-05-20" in note
            assert any(note in line for line in logs)
        finally:
            await server.close()


def _job_with_auto(tmp_path: Path) -> Path:
    _small_job(tmp_path, 5, "1", tiers={"mid": ["openrouter/auto", MINI]})
    return tmp_path / "job.yaml"


def test_variable_price_model_is_rejected_by_validate(tmp_path: Path) -> None:
    r = _cli("validate", _job_with_auto(tmp_path))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "openrouter/auto" in r.stdout + r.stderr
    assert "variable price" in r.stdout + r.stderr


def test_variable_price_model_is_rejected_by_run(tmp_path: Path) -> None:
    job = _job_with_auto(tmp_path)
    r = _cli("run", job, "--simulate")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "openrouter/auto" in r.stderr
    assert "variable price" in r.stderr
    # Rejected before anything was sent.
    assert _q(tmp_path / "results.duckdb", "SELECT count(*) FROM attempts") == [(0,)]


async def test_variable_price_model_raises_spec_error_in_process(tmp_path: Path) -> None:
    from batchroute.errors import SpecError
    from batchroute.spec import load_spec

    spec = load_spec(_job_with_auto(tmp_path))
    with SimulatorThread(Scenario(), seed=0) as sim:
        with pytest.raises(SpecError, match="openrouter/auto"):
            await run_job_async(spec, _opts(sim, tmp_path / "results.duckdb"))
        assert sim.ledger()["calls"] == 0


# ---------------------------------------------------------------------------------------------
# 6. `cheapest: true` tiers are resolved from the catalogue, printed, recorded and used.
# ---------------------------------------------------------------------------------------------


def _cheapest_by_hand(
    count: int, min_context: int, need: str, max_completion: Decimal
) -> list[str]:
    """The same rule as the docs state it, computed independently from the raw catalogue."""
    from batchroute.catalog import Catalog

    fits = []
    for m in json.loads(Catalog.shipped().raw)["data"]:
        p = {k: Decimal(str(m["pricing"].get(k, "0"))) for k in ("prompt", "completion", "request")}
        if p["prompt"] < 0 or p["completion"] < 0 or not any(p.values()):
            continue
        ctx = m.get("context_length") or (m.get("top_provider") or {}).get("context_length") or 0
        if ctx < min_context or need not in (m.get("supported_parameters") or []):
            continue
        if p["completion"] * 1_000_000 > max_completion:
            continue
        fits.append((p["prompt"] + p["completion"], m["id"]))
    return [mid for _, mid in sorted(fits)[:count]]


async def test_cheapest_tier_is_resolved_recorded_and_called(tmp_path: Path) -> None:
    cheap = {
        "cheapest": True,
        "count": 2,
        "min_context": 32000,
        "needs": ["response_format"],
        "max_price": {"completion": 1.0},
    }
    spec = _small_job(
        tmp_path, 60, "1", tiers={"cheap": cheap, "mid": [MINI]}, routing={"translation": "cheap"}
    )
    expected = _cheapest_by_hand(2, 32000, "response_format", Decimal("1.0"))
    assert len(expected) == 2
    db = tmp_path / "results.duckdb"
    logs: list[str] = []
    with SimulatorThread(Scenario(), seed=2) as sim:
        report = await run_job_async(spec, _opts(sim, db, logs))
        served = {g["model"] for g in sim.ledger()["generations"]}
    assert report.status is RunStatus.COMPLETED
    assert report.tiers["cheap"] == tuple(expected)
    assert any("cheap" in line and all(m in line for m in expected) for line in logs), logs
    called = {m for (m,) in _q(db, "SELECT DISTINCT model FROM attempts")}
    assert called <= set(expected)
    assert called
    assert served <= set(expected)
    requested = {m for (m,) in _q(db, "SELECT DISTINCT model_requested FROM results")}
    assert requested <= set(expected)
    assert {t for (t,) in _q(db, "SELECT DISTINCT tier FROM results")} == {"cheap"}


# ---------------------------------------------------------------------------------------------
# 7. budget.scope: `database` shares one cap among the jobs of a file; `job` does not.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scope", ["database", "job"])
async def test_budget_scope(tmp_path: Path, scope: str) -> None:
    cap = Decimal("0.004")
    db = tmp_path / "shared.duckdb"
    specs = []
    for name in ("alpha", "beta"):
        (tmp_path / name).mkdir()
        specs.append(
            _small_job(
                tmp_path / name,
                150,
                str(cap),
                name=name,
                budget={"daily_usd": str(cap), "scope": scope},
                output={"database": str(db)},
            )
        )
    with SimulatorThread(Scenario(), seed=4) as sim:
        a = await run_job_async(specs[0], _opts(sim, db, now=lambda: DAY1))
        b = await run_job_async(specs[1], _opts(sim, db, now=lambda: DAY1))
        assert _db_total(db) == _ledger_total(sim)
    assert a.status is RunStatus.BUDGET_EXHAUSTED
    assert b.status is RunStatus.BUDGET_EXHAUSTED
    spent = dict(_q(db, "SELECT job_name, sum(cost_usd) FROM attempts GROUP BY ALL"))
    alpha, beta = Decimal(spent["alpha"]), Decimal(spent.get("beta", 0))
    assert alpha >= cap * Decimal("0.9")
    if scope == "database":
        assert alpha + beta <= cap  # beta found the shared cap (nearly) spent
        assert beta < cap * Decimal("0.1")
    else:
        assert beta >= cap * Decimal("0.9")  # beta had a cap of its own
        assert alpha <= cap
        assert beta <= cap


# ---------------------------------------------------------------------------------------------
# 8. `batchroute report --format json` after a real run equals the same sums done in SQL.
# ---------------------------------------------------------------------------------------------


def test_report_json_totals_match_sql_after_a_simulated_run(tmp_path: Path) -> None:
    tiers = {"mid": [MINI, "google/gemini-2.0-flash-001"], "standard": ["openai/gpt-4o"]}
    _small_job(tmp_path, 150, "0.02", tiers=tiers, quality=["empty", "length"])
    write_jsonl(tmp_path / "in.jsonl", [*texts(150), "{broken"])  # one invalid record too
    scenario = tmp_path / "s.yaml"
    scenario.write_text("rate_empty: 0.2\nrate_502: 0.1\nrate_429: 0.05\n")
    job, db = tmp_path / "job.yaml", tmp_path / "results.duckdb"
    run = _cli("run", job, "--simulate", "--scenario", scenario)
    assert run.returncode in (3, 4), run.stderr  # budget or failures: a mixed picture
    assert _sim_billed(run.stderr) == _db_total(db)
    for by in ("", "model", "tier", "day,tier,model,task,job,run"):
        args = ["report", db, "--format", "json"] + (["--by", by] if by else [])
        rep = _cli(*args)
        assert rep.returncode == 0, rep.stderr
        doc = json.loads(rep.stdout)
        t = doc["totals"]
        calls, cost = _q(db, "SELECT count(*), COALESCE(sum(cost_usd), 0) FROM attempts")[0]
        assert t["calls"] == calls
        assert Decimal(t["cost_usd"]) == Decimal(cost)
        ptok, ctok = _q(
            db,
            "SELECT COALESCE(sum(prompt_tokens), 0), COALESCE(sum(completion_tokens), 0) "
            "FROM results",
        )[0]
        assert (t["prompt_tokens"], t["completion_tokens"]) == (ptok, ctok)
        statuses = dict(_q(db, "SELECT status, count(*) FROM results GROUP BY ALL"))
        assert t["records"] == {
            s: statuses.get(s, 0) for s in ("done", "failed", "invalid", "pending")
        }
        # The rows add up to the totals.
        rows = doc["rows"]
        assert sum(r["calls"] for r in rows) == calls
        assert sum((Decimal(r["cost_usd"]) for r in rows), Decimal(0)) == Decimal(cost)
        if by == "model":
            per_model = dict(_q(db, "SELECT model, sum(cost_usd) FROM attempts GROUP BY ALL"))
            assert {r["model"]: Decimal(r["cost_usd"]) for r in rows if r["calls"]} == {
                k: Decimal(v) for k, v in per_model.items()
            }
    assert Decimal(doc["today"]["cost_usd"]) == Decimal(cost)  # the run happened today (UTC)
    assert statuses["invalid"] == 1


async def test_cheapest_tier_with_no_fitting_model_is_a_spec_error(tmp_path: Path) -> None:
    from batchroute.errors import SpecError

    cheap = {"cheapest": True, "min_context": 10**9}  # no model has a billion-token context
    spec = _small_job(tmp_path, 5, "1", tiers={"cheap": cheap}, routing={"translation": "cheap"})
    with SimulatorThread(Scenario(), seed=0) as sim:
        with pytest.raises(SpecError, match=r"tiers\.cheap"):
            await run_job_async(spec, _opts(sim, tmp_path / "results.duckdb"))
        assert sim.ledger()["calls"] == 0


# ---------------------------------------------------------------------------------------------
# Undelivered answers: `malformed`/`reset` are billed by the provider though the client never
# sees their usage; the cost is recovered via X-Generation-Id + GET /generation.
# ---------------------------------------------------------------------------------------------


async def test_cost_of_undelivered_answers_is_recovered_from_generation(tmp_path: Path) -> None:
    spec = _small_job(tmp_path, 120, "100", limits={"concurrency": 16, "max_attempts": 3})
    db = tmp_path / "results.duckdb"
    scenario = Scenario.from_dict(
        {"rate_malformed": 0.15, "rate_reset": 0.15, "generation_delay_s": 0}
    )
    with SimulatorThread(scenario, seed=5) as sim:
        report = await run_job_async(spec, _opts(sim, db))
        led = sim.ledger()
    undelivered = {
        g["id"]: Decimal(g["cost_usd"]) for g in led["generations"] if not g["delivered"]
    }
    assert len(undelivered) >= 10
    kinds = dict(_q(db, "SELECT error_type, count(*) FROM attempts GROUP BY ALL"))
    assert kinds["malformed_response"] > 0  # truncated JSON
    assert kinds["connection"] > 0  # connection reset mid-body
    recovered = dict(
        _q(db, "SELECT generation_id, cost_usd FROM attempts WHERE cost_source = 'generation'")
    )
    assert {k: Decimal(v) for k, v in recovered.items()} == undelivered
    assert _db_total(db) == Decimal(led["total_cost_usd"])
    assert report.counts.cost_usd == _db_total(db)
    # results.cost_usd still sums every attempt of the record, recovered ones included.
    (r_total,) = _q(db, "SELECT sum(cost_usd) FROM results")[0]
    assert Decimal(r_total) == _db_total(db)


async def test_unknown_generation_cost_is_booked_at_worst_case(tmp_path: Path) -> None:
    """If /generation never answers, the attempt says so and the budget keeps the worst case."""
    spec = _small_job(tmp_path, 1, "100", limits={"concurrency": 1})
    db = tmp_path / "results.duckdb"
    scenario = Scenario.from_dict({"generation_delay_s": 3600}).with_script(
        {"*": ["malformed", "ok"]}
    )
    logs: list[str] = []
    with SimulatorThread(scenario, seed=0) as sim:
        report = await run_job_async(spec, _opts(sim, db, logs))
    assert report.status is RunStatus.COMPLETED
    rows = _q(db, "SELECT error_type, cost_source, cost_usd FROM attempts ORDER BY attempt_no")
    assert [(e, s) for e, s, _ in rows] == [
        ("malformed_response", "reserved"),
        (None, "openrouter"),
    ]
    # The unknown call stays on the books at its worst case: never $0 (issue 8).
    (reserved,) = _q(db, "SELECT reserved_usd FROM attempts WHERE attempt_no = 1")[0]
    assert rows[0][2] == reserved > 0
    assert any("stay booked at it" in line for line in report.notes), report.notes
