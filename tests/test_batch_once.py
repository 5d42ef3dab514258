"""An expired batch's unanswered items are resubmitted once, even across a kill -9 (issue 14's
open point): the real CLI in subprocesses against the simulator in its own process.

The kill must land between the commit of the expired batch's rows and the resubmission. No
signal from outside can hit that moment reliably, so the run kills itself there (SIGKILL) when
`BATCHROUTE_TEST_KILL_AT=collected` is set (`runner/once.py`; inert otherwise). Before, the
rerun saw only `pending` records and batched them as new (round 1 again): a record could go into
three batches, each reserved at its worst case, and billed again where an expired batch's items
ran without result lines.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections import Counter
from decimal import Decimal
from pathlib import Path

import yaml
from factories import job_dict, texts, write_jsonl
from subprocs import ENV, job_endpoint, query, run_cli, simulator

from batchroute.runner.once import KILL_ENV
from batchroute.store import ResultStore

MODEL = "openai/gpt-4o-mini"
N = 60


def _job(tmp_path: Path, endpoint: dict[str, str]) -> Path:
    job = job_dict(tmp_path, quality=[], output={"database": str(tmp_path / "o.duckdb")})
    job["endpoint"] = endpoint
    job["tiers"] = {"mid": {"models": [MODEL], "batch": True}}
    path = tmp_path / "o.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path


def test_a_kill_after_collecting_an_expired_batch_does_not_reset_the_once_mark(
    tmp_path: Path,
) -> None:
    write_jsonl(tmp_path / "in.jsonl", texts(N))
    scenario = tmp_path / "expire.json"  # every batch expires part-way: some items unanswered
    scenario.write_text(json.dumps({"rate_batch_expire": 1.0, "batch_in_progress_s": 3600}))
    db = tmp_path / "o.duckdb"
    with simulator("--scenario", str(scenario)) as sim:
        job = _job(tmp_path, job_endpoint(sim))
        first = run_cli("run", str(job))
        assert first.returncode == 7, first.stderr  # submitted, not finished
        sim.advance(7200)
        killed = subprocess.run(
            [sys.executable, "-m", "batchroute", "run", str(job)],
            capture_output=True, text=True, env={**ENV, KILL_ENV: "collected"}, timeout=120,
            check=False,
        )  # fmt: skip
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        (row,) = ResultStore(db).batches()
        assert (row.status, row.round) == ("collected", 1)  # committed before the kill
        expired = query(
            db, "SELECT count(*) FROM results WHERE status = 'pending' "
            "AND error_type = 'batch_expired'",
        )[0][0]  # fmt: skip
        assert 0 < expired < N  # some items ran, the rest await their one resubmission
        code, runs = 7, 0
        while code == 7 and runs < 6:  # each later batch: submitted, then collected
            sim.advance(7200)
            done = run_cli("run", str(job))
            code, runs = done.returncode, runs + 1
        assert code == 0, done.stderr
        rows = ResultStore(db).batches()
        per_key = Counter(i.key for r in rows for i in r.items)
        assert max(per_key.values()) <= 2, per_key.most_common(3)  # 3 before: round 1 twice
        assert sorted(r.round for r in rows) == [1, 2]
        assert len(rows[1].items) == expired  # the one resubmission: exactly the unanswered
        assert query(db, "SELECT status, count(*) FROM results GROUP BY 1") == [("done", N)]
        ledger = sim.ledger()
        ((booked,),) = query(db, "SELECT SUM(cost_usd) FROM attempts")
        assert Decimal(booked) == Decimal(ledger["total_cost_usd"])


def test_a_kill_after_collecting_failed_items_still_sends_them_synchronously(
    tmp_path: Path,
) -> None:
    """A failed batch item goes through the tier's synchronous chain, not into another batch:
    the same mark, read back after a kill as well."""
    write_jsonl(tmp_path / "in.jsonl", texts(N))
    scenario = tmp_path / "fail.json"
    scenario.write_text(json.dumps({"rate_batch_item_error": 0.5, "batch_in_progress_s": 3600}))
    db = tmp_path / "o.duckdb"
    with simulator("--scenario", str(scenario)) as sim:
        job = _job(tmp_path, job_endpoint(sim))
        assert run_cli("run", str(job)).returncode == 7
        sim.advance(7200)
        killed = subprocess.run(
            [sys.executable, "-m", "batchroute", "run", str(job)],
            capture_output=True, text=True, env={**ENV, KILL_ENV: "collected"}, timeout=120,
            check=False,
        )  # fmt: skip
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        failed = query(db, "SELECT count(*) FROM results WHERE status = 'pending'")[0][0]
        assert 0 < failed < N
        rerun = run_cli("run", str(job))
        assert rerun.returncode == 0, rerun.stderr  # exit 7 before: a new batch for them
        assert len(ResultStore(db).batches()) == 1
        assert query(db, "SELECT status, count(*) FROM results GROUP BY 1") == [("done", N)]
        ((sync,),) = query(db, "SELECT count(*) FROM attempts WHERE attempt_no > 0")
        assert sync >= failed
        ((booked,),) = query(db, "SELECT SUM(cost_usd) FROM attempts")
        assert Decimal(booked) == Decimal(sim.ledger()["total_cost_usd"])
