"""The books after a kill -9 with calls in flight (review of the day's merges).

A call the run journaled as in flight and never heard back from is replayed as a `killed`
attempt booked at its reservation (the provider may bill it). `results.cost_usd` is the sum
over all attempts of the record (design §4): the replayed reservation must be in it too, or
the per-record books say less than the bill. Real processes: the CLI killed with -9 while the
simulator holds its calls, the simulator's ledger as the bill, real DuckDB files.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from factories import texts, write_job, write_jsonl
from subprocs import (
    job_endpoint,
    query,
    reaped,
    run_cli,
    simulator,
    spawn_run,
    wait_holding_lock,
    wait_until,
)

from batchroute.journal import journal_files, journal_path
from batchroute.usd import usd

N = 40
FAST = 10
CONCURRENCY = 8
LIMITS = {"concurrency": CONCURRENCY, "requests_per_minute": None, "timeout_s": 60}
REQUEST = {"max_tokens": 2048}  # no finish_length escalation: one billed call per record


@pytest.mark.parametrize("first", [None, "empty"])
def test_a_call_killed_in_flight_is_in_its_records_cost(tmp_path: Path, first: str | None) -> None:
    """FAST calls answered, then CONCURRENCY calls held by the simulator when the run is
    killed with -9; the simulator answers (and bills) them after the kill. The next run
    replays their reservations and does every record: each record's cost is the sum of its
    attempts, and the results' total is not below the bill. With `first`, the held calls are
    CONCURRENCY records' second attempts (escalated to the next tier's model) after an empty
    answer that was billed (its attempt row is journaled, its record's row never was)."""
    slow = [{"fault": "ok", "latency_ms": 1_500}] * 200
    if first is None:
        scenario = {"script": {"openai/gpt-4o-mini": [{"fault": "ok"}] * FAST + slow}}
        before = []
    else:
        before = [{"fault": first}] * CONCURRENCY
        mid = [{"fault": "ok"}] * FAST + before
        scenario = {"script": {"openai/gpt-4o-mini": mid, "anthropic/claude-sonnet-4.5": slow}}
    with simulator() as sim:
        sim.set_scenario(scenario)
        write_jsonl(tmp_path / "in.jsonl", texts(N))
        job = write_job(tmp_path, endpoint=job_endpoint(sim), limits=LIMITS, request=REQUEST)
        db = tmp_path / "results.duckdb"
        with reaped(spawn_run(job)) as proc:
            wait_holding_lock(proc, db)
            wait_until(
                lambda: sim.calls() >= FAST + len(before) and sim.in_flight() >= CONCURRENCY,
                "the held calls",
            )
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        wait_until(lambda: sim.in_flight() == 0, "the held calls to be answered")
        sim.set_scenario({})
        final = run_cli("run", str(job))
        assert final.returncode == 0, final.stderr
        bill = Decimal(str(sim.ledger()["total_cost_usd"]))

    killed = query(db, "SELECT count(*) FROM attempts WHERE outcome = 'killed'")[0][0]
    assert killed >= CONCURRENCY, "the kill must land with calls in flight"
    per_record = query(
        db,
        "SELECT r.record_key, r.cost_usd, sum(a.cost_usd) FROM results r "
        "JOIN attempts a USING (job_name, record_key) GROUP BY ALL "
        "HAVING r.cost_usd <> sum(a.cost_usd)",
    )
    assert per_record == []
    (total,) = query(db, "SELECT sum(cost_usd) FROM results")[0]
    assert total >= bill
    # The rows the replay made for them were completed by the run: each record done once.
    assert query(db, "SELECT status, count(*), count(line_no) FROM results GROUP BY ALL") == [
        ("done", N, N)
    ]


# A reader (an SQL client) holding the file, once the writer process lets go of it between
# two commits: the writer cannot commit while it does.
HOLD = """
import sys, duckdb
while True:
    try:
        con = duckdb.connect(sys.argv[1])
        break
    except duckdb.IOException:
        pass
print("held", flush=True)
sys.stdin.read()
"""


def test_the_dry_run_after_a_kill_counts_what_the_run_then_skips(tmp_path: Path) -> None:
    """A run killed with -9 while a reader held the file (FAST records answered and journaled,
    CONCURRENCY calls in flight): the dry run's counts and today's spend are those of the run
    that follows, which replays the journal first; the dry run writes nothing (the journal is
    still there for that run). The writer hands the run's first segments over at once when the
    input is read, so some FAST answers may be committed before the reader takes the file; the
    calls in flight are only ever in the journal, and the figures do not depend on how many."""
    with simulator() as sim:
        slow = [{"fault": "ok", "latency_ms": 60_000}] * 200
        sim.set_scenario({"script": {"openai/gpt-4o-mini": [{"fault": "ok"}] * FAST + slow}})
        write_jsonl(tmp_path / "in.jsonl", texts(N))
        job = write_job(tmp_path, endpoint=job_endpoint(sim), limits=LIMITS, request=REQUEST)
        db = tmp_path / "results.duckdb"
        with reaped(spawn_run(job)) as proc:
            wait_holding_lock(proc, db)
            wait_until(lambda: sim.calls() >= 1 or proc.poll() is not None, "the first call")
            with subprocess.Popen(
                [sys.executable, "-c", HOLD, str(db)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            ) as holder:
                assert holder.stdout is not None
                assert holder.stdin is not None
                try:
                    assert holder.stdout.readline() == "held\n"
                    wait_until(
                        lambda: sim.calls() >= FAST and sim.in_flight() >= CONCURRENCY,
                        "the held calls",
                    )
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                finally:
                    holder.stdin.close()  # the reader lets go of the file and ends
        sim.set_scenario({})
        ((committed,),) = query(db, "SELECT count(*) FROM results WHERE status = 'done'")
        assert committed <= FAST
        attempts = query(db, "SELECT count(*) FROM attempts")
        dry = run_cli("run", str(job), "--dry-run", "--json")
        assert dry.returncode == 0, dry.stderr
        assert journal_files(journal_path(db)) != []
        assert query(db, "SELECT count(*) FROM attempts") == attempts  # the dry run wrote none
        run = run_cli("run", str(job))
        assert run.returncode == 0, run.stderr

    said = json.loads(dry.stdout)
    m = re.search(r"this input: \d+ records, (\d+) already final", run.stderr)
    assert m is not None, run.stderr
    assert int(m.group(1)) == FAST  # the run replayed the journal: FAST records final
    assert said["skipped_already_final"] == FAST
    assert said["records"] == N - FAST
    spend = re.search(r"today's spend (\$[0-9.]+) of", run.stderr)
    assert spend is not None, run.stderr
    # the FAST answers at their cost and the calls in flight at their reservation
    assert usd(Decimal(said["spent_today_usd"])) == spend.group(1) != "$0.00"
