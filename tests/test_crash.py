"""Crash safety with real processes: the CLI killed (-9) or interrupted (SIGINT) mid-run, many
times over, against the simulator in its own process; the next run finishes the job.

What is counted is what the provider billed (the simulator's ledger), not what we think we sent.
"""

from __future__ import annotations

import random
import signal
from pathlib import Path
from subprocess import Popen

from factories import texts, write_job, write_jsonl
from subprocs import (
    Lines,
    Simulator,
    check_integrity,
    job_endpoint,
    query,
    reaped,
    run_cli,
    simulator,
    spawn_run,
    wait_holding_lock,
    wait_until,
)

from batchroute.journal import journal_path

N = 3_000
CONCURRENCY = 64
LIMITS = {"concurrency": CONCURRENCY, "requests_per_minute": None, "timeout_s": 30}
# Far above the simulator's ~120±60 completion tokens: no `finish_length` escalation, so one
# billed call per record is exactly what a run that pays nothing twice must show.
REQUEST = {"max_tokens": 2048}


def _job(tmp_path: Path, sim: Simulator, n: int = N, **overrides: object) -> tuple[Path, Path]:
    write_jsonl(tmp_path / "in.jsonl", texts(n))
    overrides = {"limits": LIMITS, "request": REQUEST, **overrides}
    job = write_job(tmp_path, endpoint=job_endpoint(sim), **overrides)
    return job, tmp_path / "results.duckdb"


def _pick_moment(proc: Popen[str], sim: Simulator, db: Path, rng: random.Random, i: int) -> None:
    """Return at a seeded random moment of run `i`: the first while it starts up (store,
    catalogue), the others while its calls are flowing. Each moment is a point of the run's
    progress, not a time, so it does not drift with the machine's load."""
    wait_holding_lock(proc, db)
    if i == 0:
        # Just after the lock (the store is opening), or once the journal exists (the store is
        # open; the catalogue fetch and the first calls are next).
        if rng.choice(("lock", "journal")) == "journal":
            journal = journal_path(db)
            wait_until(lambda: journal.exists() or proc.poll() is not None, "the journal")
        return
    # Measured in billed calls rather than seconds, so the moment does not drift with the
    # machine's load: somewhere between the first call and ~5 waves of `concurrency`.
    target = sim.calls() + rng.randint(1, 300)
    wait_until(lambda: sim.calls() >= target or proc.poll() is not None, "calls", poll=0.05)


def _assert_all_done_once(db: Path, n: int) -> None:
    rows = query(db, "SELECT record_key, status FROM results WHERE job_name = 't'")
    keys = [k for k, _ in rows]
    assert len(keys) == len(set(keys)) == n
    assert set(keys) == {r["id"] for r in texts(n)}
    assert {s for _, s in rows} == {"done"}


def test_kill_9_at_random_moments_loses_only_calls_in_flight(tmp_path: Path) -> None:
    """8 seeded SIGKILLs (one at start-up, seven mid-run), each restarted: in the end one `done`
    row per key, an intact file, and at most kills × concurrency calls paid beyond one per
    record (only calls in flight are lost: finished ones are journaled at once, so the last
    second of results is not)."""
    rng = random.Random(20260528)
    kills = 0
    with simulator("--latency-ms", "20") as sim:
        job, db = _job(tmp_path, sim)
        for i in range(8):
            with reaped(spawn_run(job)) as proc:
                _pick_moment(proc, sim, db, rng, i)
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                    kills += 1
                proc.wait()
        before_final = sim.calls()
        final = run_cli("run", str(job))
        ledger = sim.ledger()

    assert final.returncode == 0, final.stderr
    assert 0 < before_final < ledger["calls"], "kills must land mid-run, before the end"
    _assert_all_done_once(db, N)
    counts = check_integrity(db)
    assert counts["results"] == N
    extra = ledger["calls"] - N
    print(f"kills={kills} paid={ledger['calls']} extra={extra} bound={kills * CONCURRENCY}")
    assert kills >= 6
    assert extra <= kills * CONCURRENCY
    # Every call the database knows of was billed, and every unknown billed call was in flight.
    billed = {g["id"] for g in ledger["generations"]}
    recorded = {g for (g,) in query(db, "SELECT generation_id FROM attempts") if g}
    assert recorded <= billed
    assert len(billed - recorded) <= kills * CONCURRENCY
    done_gens = [g for (g,) in query(db, "SELECT generation_id FROM results")]
    assert len(set(done_gens)) == N
    assert set(done_gens) <= recorded
    statuses = dict(query(db, "SELECT status, count(*) FROM runs GROUP BY ALL"))
    assert "running" not in statuses
    assert statuses["completed"] == 1


def test_sigint_at_random_moments_pays_no_call_twice(tmp_path: Path) -> None:
    """5 seeded Ctrl-Cs (one at start-up, four mid-run), each restarted: every interrupted run
    exits 130 and is `interrupted`, and the provider billed exactly one call per record."""
    rng = random.Random(7)
    n = 2_000
    with simulator("--latency-ms", "20") as sim:
        job, db = _job(tmp_path, sim, n=n)
        for i in range(5):
            with reaped(spawn_run(job)) as proc:
                _pick_moment(proc, sim, db, rng, i)
                proc.send_signal(signal.SIGINT)
                out, err = proc.communicate(timeout=120)
                assert proc.returncode == 130, err
                assert " interrupted: " in out
                assert out.rstrip().endswith("exit 130")
        partial = sim.calls()
        final = run_cli("run", str(job))
        ledger = sim.ledger()

    assert final.returncode == 0, final.stderr
    assert 0 < partial < n, "interrupts must land mid-run"
    assert ledger["calls"] == n
    billed = [g["id"] for g in ledger["generations"]]
    done = [g for (g,) in query(db, "SELECT generation_id FROM results WHERE status = 'done'")]
    assert sorted(done) == sorted(billed)  # one billed generation per record, none twice
    _assert_all_done_once(db, n)
    check_integrity(db)
    statuses = dict(query(db, "SELECT status, count(*) FROM runs GROUP BY ALL"))
    assert statuses == {"interrupted": 5, "completed": 1}
    (calls_in_db,) = query(db, "SELECT count(*) FROM attempts")[0]
    assert calls_in_db == n
    assert query(db, "SELECT count(*) FROM attempts GROUP BY record_key HAVING count(*) > 1") == []


def test_second_sigint_cancels_calls_in_flight_and_keeps_what_finished(tmp_path: Path) -> None:
    """The first Ctrl-C waits (grace 120 s) for calls that hang for 10 minutes; the second
    cancels them at once: exit 130, the fast calls that finished are saved `done`, the cancelled
    ones are `pending`, and the next run redoes only those."""
    fast = 20
    hang = {"fault": "ok", "latency_ms": 600_000}
    scenario = {"script": {"openai/gpt-4o-mini": [{"fault": "ok"}] * fast + [hang] * 200}}
    with simulator() as sim:
        sim.set_scenario(scenario)
        job, db = _job(
            tmp_path,
            sim,
            n=60,
            limits={**LIMITS, "concurrency": 8, "grace_s": 120},
        )
        with reaped(spawn_run(job)) as proc:
            stderr = Lines(proc.stderr)
            wait_holding_lock(proc, db)
            # The fast calls are billed and the next 8 (the concurrency) are hanging.
            wait_until(lambda: sim.calls() >= fast and sim.in_flight() >= 8, "8 hanging calls")
            proc.send_signal(signal.SIGINT)
            stderr.wait_for("interrupt again to stop at once")  # the first Ctrl-C was handled
            assert proc.poll() is None, "the first Ctrl-C must wait for calls in flight"
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=30)  # vs 120 s grace / 600 s hang
            err = stderr.text()
            assert proc.returncode == 130, err
        assert "interrupt again to stop at once" in err
        assert sim.calls() == fast
        rows = dict(query(db, "SELECT status, count(*) FROM results GROUP BY ALL"))
        assert rows["done"] == fast
        assert rows.get("pending", 0) <= 8
        assert query(db, "SELECT status FROM runs") == [("interrupted",)]
        sim.set_scenario({})
        final = run_cli("run", str(job))
        assert final.returncode == 0, final.stderr
        assert f"{fast} already final" in final.stdout
        assert sim.calls() == 60  # only the 40 not done were sent again


def test_second_sigint_leaves_no_orphan_reconciler_tasks(tmp_path: Path) -> None:
    """Calls answered without usage are booked at their reservation and handed to the
    reconciler, whose /generation polls are still waiting (the stats come after an hour) when a
    second Ctrl-C stops the run: the run still stops them before its HTTP session closes (no
    "Task exception was never retrieved", no "Session is closed"), and every such call stays in
    the database at its reservation for the next run to ask about."""
    paid = 12
    hang = {"fault": "ok", "latency_ms": 600_000}
    scenario = {
        "generation_delay_s": 3600,
        "script": {"openai/gpt-4o-mini": [{"fault": "no_usage"}] * paid + [hang] * 200},
    }
    with simulator() as sim:
        sim.set_scenario(scenario)
        job, db = _job(tmp_path, sim, n=40, limits={**LIMITS, "concurrency": 4, "grace_s": 120})
        with reaped(spawn_run(job)) as proc:
            stderr = Lines(proc.stderr)
            wait_holding_lock(proc, db)
            wait_until(lambda: sim.calls() >= paid and sim.in_flight() >= 4, "4 hanging calls")
            proc.send_signal(signal.SIGINT)
            stderr.wait_for("interrupt again to stop at once")
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=30)
            err = stderr.text()
            assert proc.returncode == 130, err
        assert "Task exception was never retrieved" not in err, err
        assert "Session is closed" not in err, err
        assert "Traceback" not in err, err
        rows = query(
            db,
            "SELECT outcome, cost_source, count(*), count(generation_id) FROM attempts "
            "GROUP BY ALL",
        )
        by_outcome = {o: (src, n, ids) for o, src, n, ids in rows}
        assert by_outcome["ok"] == ("reserved", paid, paid)  # booked at the reservation, ids kept
        assert by_outcome["cancelled"][:2] == ("reserved", 4)
