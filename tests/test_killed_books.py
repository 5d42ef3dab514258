"""The books after a kill -9 with calls in flight (review of the day's merges).

A call the run journaled as in flight and never heard back from is replayed as a `killed`
attempt booked at its reservation (the provider may bill it). `results.cost_usd` is the sum
over all attempts of the record (design §4): the replayed reservation must be in it too, or
the per-record books say less than the bill. Real processes: the CLI killed with -9 while the
simulator holds its calls, the simulator's ledger as the bill, real DuckDB files.
"""

from __future__ import annotations

import signal
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


# The dry run after such a kill, with every answer only in the journal (a reader held the file):
# tests/test_reader_holds_file.py, deterministic (the simulator answers only when the test says).
