"""The batch lane end to end: the real CLI in a subprocess against the real simulator."""

from __future__ import annotations

import json
import re
import signal
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml
from factories import job_dict, texts, write_jsonl
from subprocs import Lines, job_endpoint, query, reaped, run_cli, simulator, spawn_run

from batchroute.store import ResultStore

MODEL = "openai/gpt-4o-mini"
N = 1_200


def _job(tmp_path: Path, name: str, *, batch: bool, **extra: Any) -> Path:
    job = job_dict(tmp_path, quality=[], output={"database": str(tmp_path / f"{name}.duckdb")})
    job.update(extra)
    job["tiers"] = {"mid": {"models": [MODEL], "batch": batch}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path


def _ledger_usd(stderr: str) -> Decimal:
    m = re.search(r"simulator ledger: .*\$([0-9.]+)", stderr)
    assert m is not None, stderr
    return Decimal(m.group(1))


def _db_cost(db: Path) -> tuple[Decimal, Decimal]:
    ((a,),) = query(db, "SELECT COALESCE(SUM(cost_usd), 0) FROM attempts")
    ((r,),) = query(db, "SELECT COALESCE(SUM(cost_usd), 0) FROM results")
    return Decimal(a), Decimal(r)


def test_a_batch_tier_on_1200_records_costs_about_half_of_sync(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in.jsonl", texts(N))
    batched = run_cli("run", str(_job(tmp_path, "b", batch=True)), "--simulate", "--wait")
    assert batched.returncode == 0, batched.stderr
    db = tmp_path / "b.simulated.duckdb"
    assert query(db, "SELECT status, count(*) FROM results GROUP BY 1") == [("done", N)]
    ledger = _ledger_usd(batched.stderr)
    assert _db_cost(db) == (ledger, ledger)
    assert query(db, "SELECT DISTINCT cost_source FROM results") == [("batch_apportioned",)]
    sync = run_cli("run", str(_job(tmp_path, "s", batch=False)), "--simulate")
    assert sync.returncode == 0, sync.stderr
    sync_cost = _db_cost(tmp_path / "s.simulated.duckdb")[0]
    assert sync_cost == _ledger_usd(sync.stderr)
    ratio = ledger / sync_cost
    assert Decimal("0.45") <= ratio <= Decimal("0.55"), (ledger, sync_cost)


def test_without_wait_the_run_exits_7_and_the_next_run_collects(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in.jsonl", texts(40))
    scenario = tmp_path / "slow.json"
    scenario.write_text(json.dumps({"batch_in_progress_s": 3600}))
    with simulator("--scenario", str(scenario)) as sim:
        job = _job(tmp_path, "j", batch=True, endpoint=job_endpoint(sim))
        first = run_cli("run", str(job))
        assert first.returncode == 7, first.stderr
        assert "1 batch(es) in flight" in first.stdout
        again = run_cli("run", str(job))  # still in progress: nothing is sent twice
        assert again.returncode == 7, again.stderr
        assert sim.ledger()["batches"] == 1
        sim.advance(7200)
        last = run_cli("run", str(job))
        assert last.returncode == 0, last.stderr
        db = tmp_path / "j.duckdb"
        assert query(db, "SELECT status, count(*) FROM results GROUP BY 1") == [("done", 40)]
        ledger = sim.ledger()
        assert ledger["batches"] == 1
        assert _db_cost(db)[0] == Decimal(ledger["total_cost_usd"])


def test_kill_9_while_waiting_then_a_rerun_submits_nothing_twice(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in.jsonl", texts(N))
    scenario = tmp_path / "slow.json"
    scenario.write_text(json.dumps({"batch_in_progress_s": 3600}))
    with simulator("--scenario", str(scenario)) as sim:
        job = _job(tmp_path, "k", batch=True, endpoint=job_endpoint(sim))
        with reaped(spawn_run(job, "--wait")) as proc:
            assert proc.stderr is not None
            err = Lines(proc.stderr)
            err.wait_for("waiting for 1 batch")  # submitted, its row written: now waiting
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        assert proc.returncode == -signal.SIGKILL
        db = tmp_path / "k.duckdb"
        assert query(db, "SELECT status FROM batches") == [("submitted",)]
        assert sim.ledger()["batches"] == 1
        sim.advance(7200)
        rerun = run_cli("run", str(job), "--wait")
        assert rerun.returncode == 0, rerun.stderr
        ledger = sim.ledger()
        assert (ledger["batches"], ledger["batch_items"]) == (1, N)
        assert query(db, "SELECT status, count(*) FROM results GROUP BY 1") == [("done", N)]
        per_key = query(db, "SELECT count(*) FROM attempts GROUP BY record_key HAVING count(*) > 1")
        assert per_key == []
        assert _db_cost(db)[0] == Decimal(ledger["total_cost_usd"])


def test_a_batch_whose_id_was_never_written_is_adopted_from_the_list(tmp_path: Path) -> None:
    """As if killed between the POST's 202 and the write of the batch id: the row is an intent.
    The next run finds the batch in the simulator's GET /batches and does not submit again."""
    write_jsonl(tmp_path / "in.jsonl", texts(30))
    with simulator() as sim:
        job = _job(tmp_path, "a", batch=True, endpoint=job_endpoint(sim))
        first = run_cli("run", str(job))
        assert first.returncode == 7, first.stderr
        store = ResultStore(tmp_path / "a.duckdb")
        (row,) = store.batches()
        row.batch_id, row.status, row.submitted_at = None, "intent", None
        store.save_batch(row)
        sim.advance(7200)
        rerun = run_cli("run", str(job), "--wait")
        assert rerun.returncode == 0, rerun.stderr
        assert "adopted" in rerun.stderr
        assert sim.ledger()["batches"] == 1
        (again,) = store.batches()
        assert again.status == "collected"
        assert query(
            tmp_path / "a.duckdb", "SELECT count(*) FROM results WHERE status = 'done'"
        ) == [(30,)]


def test_ctrl_c_while_waiting_leaves_the_batch_for_the_next_run(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in.jsonl", texts(20))
    scenario = tmp_path / "slow.json"
    scenario.write_text(json.dumps({"batch_in_progress_s": 3600}))
    with simulator("--scenario", str(scenario)) as sim:
        job = _job(tmp_path, "c", batch=True, endpoint=job_endpoint(sim))
        with reaped(spawn_run(job, "--wait")) as proc:
            assert proc.stderr is not None
            err = Lines(proc.stderr)
            err.wait_for("next poll in 4 s")  # the polls have backed off: a long nap follows
            proc.send_signal(signal.SIGINT)
            proc.wait()
        assert proc.returncode == 130, err.text()
        db = tmp_path / "c.duckdb"
        assert query(db, "SELECT status FROM batches") == [("submitted",)]
        sim.advance(7200)
        rerun = run_cli("run", str(job))
        assert rerun.returncode == 0, rerun.stderr
        assert sim.ledger()["batches"] == 1
        assert query(db, "SELECT status, count(*) FROM results GROUP BY 1") == [("done", 20)]
