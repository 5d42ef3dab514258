"""Every bad night ends well (issue 9), runner side: outages, a reader holding the file, reruns
that run out of budget, cut-off answers, duplicate ids, inputs fixed after a bad night.

Real parts: the simulator or a closed port on loopback, the real CLI in a subprocess, a real
second process holding the DuckDB file.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from factories import job_dict, texts, write_jsonl
from subprocs import ENV, query, reaped, run_cli, simulator, spawn_run, wait_until

BUDGET = ["meta-llama/llama-3.1-8b-instruct", "qwen/qwen-2.5-7b-instruct"]
MINI = "openai/gpt-4o-mini"


def _job(tmp_path: Path, base_url: str, records: list[Any], **overrides: Any) -> Path:
    write_jsonl(tmp_path / "in.jsonl", records)
    overrides.setdefault("quality", [])
    job = job_dict(
        tmp_path,
        endpoint={"base_url": base_url, "api_key_env": "BATCHROUTE_TEST_KEY"},
        **overrides,
    )
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path


def _statuses(db: Path) -> dict[str, int]:
    return dict(query(db, "SELECT status, count(*) FROM results GROUP BY 1"))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_endpoint_leaves_everything_pending_and_stops_early(tmp_path: Path) -> None:
    """Nothing listens: the breaker stops the run (exit 6) long before 12 attempts per record;
    every record stays pending, and the next night's run (provider back) sends them all."""
    base = f"http://127.0.0.1:{_closed_port()}/api/v1"
    limits = {"backoff_base_s": 0.001, "backoff_max_s": 0.01, "concurrency": 4}
    job = _job(tmp_path, base, texts(200), limits=limits)
    out = run_cli("run", str(job))
    db = tmp_path / "results.duckdb"
    assert out.returncode == 6, out.stdout + out.stderr
    assert "failed for availability" in out.stderr
    assert "Traceback" not in out.stderr
    assert set(_statuses(db)) == {"pending"}
    calls = query(db, "SELECT count(*) FROM attempts")[0][0]
    assert calls < 200  # it stopped early, not after every record's full chain
    with simulator() as sim:
        job = _job(tmp_path, sim.base_url, texts(200), limits=limits)
        again = run_cli("run", str(job))
    assert again.returncode == 0, again.stderr
    assert _statuses(db) == {"done": 200}


def test_cheap_tier_down_does_not_escalate_silently(tmp_path: Path) -> None:
    """Both budget models down: their records wait (exit 6), never a silent dearer tier."""
    with simulator() as sim:
        sim.set_scenario({"models": {m: {"rate_503": 1.0} for m in BUDGET}, "retry_after_s": 0})
        job = _job(
            tmp_path,
            sim.base_url,
            texts(30),
            task="classification",  # → budget tier
            limits={"backoff_base_s": 0.001, "backoff_max_s": 0.01},
        )
        out = run_cli("run", str(job))
    db = tmp_path / "results.duckdb"
    assert out.returncode == 6, out.stdout + out.stderr
    assert _statuses(db) == {"pending": 30}
    served = {m for (m,) in query(db, "SELECT DISTINCT model FROM attempts")}
    assert served <= set(BUDGET)  # no dearer tier was paid for


def test_escalation_on_outage_only_when_the_job_opts_in(tmp_path: Path) -> None:
    with simulator() as sim:
        sim.set_scenario({"models": {m: {"rate_503": 1.0} for m in BUDGET}, "retry_after_s": 0})
        job = _job(
            tmp_path,
            sim.base_url,
            texts(10),
            task="classification",
            escalate_on=["quality", "unavailable"],
            # One at a time: each record's six failures are followed by its escalated success,
            # so the breaker (all of the last 50 calls failed) never trips.
            limits={
                "backoff_base_s": 0.001,
                "backoff_max_s": 0.01,
                "outage_ratio": 1,
                "concurrency": 1,
            },
        )
        out = run_cli("run", str(job))
    db = tmp_path / "results.duckdb"
    assert out.returncode == 0, out.stdout + out.stderr
    assert _statuses(db) == {"done": 10}
    assert query(db, "SELECT DISTINCT tier FROM results") == [("mid",)]


def test_a_400_every_record_gets_stops_the_run(tmp_path: Path) -> None:
    """A misspelt provider option: OpenRouter rejects every call the same way. The run stops
    with that error (exit 2) after a few calls instead of paying for 300 rejections."""
    with simulator() as sim:
        job = _job(
            tmp_path,
            sim.base_url,
            texts(300),
            tiers={"mid": {"models": [MINI], "provider": {"Sort": "price"}}},
            limits={"concurrency": 4},
        )
        out = run_cli("run", str(job))
    db = tmp_path / "results.duckdb"
    assert out.returncode == 2, out.stdout + out.stderr
    assert "Unrecognized key" in out.stderr
    assert "rejected the same way" in out.stderr
    assert query(db, "SELECT count(*) FROM attempts")[0][0] < 40
    assert _statuses(db).get("done", 0) == 0


HOLD = """
import sys, time, duckdb
deadline = time.monotonic() + 60
while True:  # the run may be flushing (holding the file) right now: take it once it lets go
    try:
        con = duckdb.connect(sys.argv[1])
        break
    except duckdb.IOException:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.005)
print("held", flush=True)
time.sleep(float(sys.argv[2]))
con.close()
print("released", flush=True)
"""


def _hold(db: Path, seconds: float) -> subprocess.Popen[str]:
    """Another process (a BI tool) with the DuckDB file open for `seconds`."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(db), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_reader_holding_the_file_delays_the_run_but_loses_nothing(tmp_path: Path) -> None:
    """The file is held for a few seconds mid-run: the writer waits and retries (within
    output.busy_timeout_s), the run completes, every record is saved."""
    with simulator("--latency-ms", "20") as sim:
        job = _job(tmp_path, sim.base_url, texts(400), limits={"concurrency": 4})
        db = tmp_path / "results.duckdb"
        with reaped(spawn_run(job)) as run:
            wait_until(lambda: db.exists() and sim.calls() > 50, "the run under way")
            with reaped(_hold(db, 4)) as holder:
                holder.wait(timeout=60)
            out, err = run.communicate(timeout=120)
        assert run.returncode == 0, out + err
    assert _statuses(db) == {"done": 400}


def test_a_reader_holding_the_file_too_long_ends_the_run_cleanly(tmp_path: Path) -> None:
    """Held longer than output.busy_timeout_s: the run stops within seconds (no hang with the
    lock held), says where the rows are, and the next run writes every one of them."""
    with simulator("--latency-ms", "20") as sim:
        job = _job(
            tmp_path,
            sim.base_url,
            texts(2000),
            limits={"concurrency": 4},
            output={"database": str(tmp_path / "results.duckdb"), "busy_timeout_s": 1},
        )
        db = tmp_path / "results.duckdb"
        with reaped(spawn_run(job)) as run:
            wait_until(lambda: db.exists() and sim.calls() > 50, "the run under way")
            with reaped(_hold(db, 60)) as holder:
                t0 = time.monotonic()
                out, err = run.communicate(timeout=60)
                took = time.monotonic() - t0
                holder.kill()
        assert run.returncode not in (0, 5), out + err
        assert took < 30
        assert "journal" in err
        assert "Traceback" not in err
        again = run_cli("run", str(job))
        assert again.returncode == 0, again.stderr
        assert _statuses(db) == {"done": 2000}
        # Nothing paid was lost: only the calls cut off in flight (≤ concurrency) were resent.
        assert sim.calls() <= 2000 + 4


def test_rerun_changed_without_budget_keeps_the_paid_outputs(tmp_path: Path) -> None:
    """--rerun-changed after a prompt change, with too little budget: the records that could
    not be redone keep yesterday's paid answer (status pending, output kept)."""
    with simulator() as sim:
        job = _job(tmp_path, sim.base_url, texts(60), tiers={"mid": [MINI]})
        assert run_cli("run", str(job)).returncode == 0
        db = tmp_path / "results.duckdb"
        before = dict(query(db, "SELECT record_key, output FROM results"))
        job2 = _job(
            tmp_path,
            sim.base_url,
            texts(60),
            tiers={"mid": [MINI]},
            prompt={"system": "You translate well.", "user": "Into {target_lang}: {text}"},
            budget={"daily_usd": "0.002"},  # today's spend (~$0.004) is already above it
        )
        out = run_cli("run", str(job2), "--rerun-changed")
    assert out.returncode == 3, out.stdout + out.stderr
    after = dict(query(db, "SELECT record_key, output FROM results"))
    assert _statuses(db) == {"pending": 60}
    assert after == before
    assert all(after.values())


def test_cut_off_answers_are_stored_not_thrown_away(tmp_path: Path) -> None:
    """max_tokens 8 with the default length check: every answer is cut off and fails the
    check, but the paid text is stored on the record's row with finish_reason 'length'."""
    with simulator() as sim:
        job = _job(
            tmp_path,
            sim.base_url,
            texts(40),
            tiers={"mid": [MINI]},
            quality=["empty", "length"],
            request={"max_tokens": 8},
        )
        out = run_cli("run", str(job))
    db = tmp_path / "results.duckdb"
    assert out.returncode == 4, out.stdout + out.stderr
    rows = query(db, "SELECT status, finish_reason, output, cost_usd FROM results")
    assert len(rows) == 40
    failed = [r for r in rows if r[0] == "failed"]
    assert len(failed) > 30  # a few drew fewer than 8 tokens and stopped in time
    assert {(s, f) for s, f, _, _ in failed} == {("failed", "length")}
    assert all(o and c > 0 for _, _, o, c in rows)  # every paid answer is there


def test_duplicate_and_differently_typed_ids_are_counted_not_paid_twice(tmp_path: Path) -> None:
    """`1` and `"1"` (and the same id twice) collide as keys: the first one is the record,
    the others are counted in the run row and skipped, never paid for nor overwriting it."""
    records: list[Any] = [
        {"id": 1, "text": "first", "target_lang": "French"},
        {"id": "1", "text": "second", "target_lang": "French"},
        {"id": True, "text": "third", "target_lang": "French"},
        {"id": "True", "text": "fourth", "target_lang": "French"},
        {"id": 1, "text": "fifth", "target_lang": "French"},
    ]
    with simulator() as sim:
        job = _job(tmp_path, sim.base_url, records, tiers={"mid": [MINI]})
        out = run_cli("run", str(job))
        calls = sim.calls()
    db = tmp_path / "results.duckdb"
    assert out.returncode == 0, out.stdout + out.stderr
    assert calls == 2
    assert query(db, "SELECT records_duplicate FROM runs") == [(3,)]
    assert query(db, "SELECT count(*) FROM results") == [(2,)]
    assert "3 record(s) repeat an id" in out.stderr


def test_an_invalid_line_fixed_later_no_longer_fails_the_job(tmp_path: Path) -> None:
    """A broken line (keyed by its hash) makes the night exit 4; once the line is fixed in
    the input, its old `invalid` row is not in the input any more: exit 0."""
    good = [{"text": f"sentence {i}", "target_lang": "German"} for i in range(5)]
    with simulator() as sim:
        job = _job(tmp_path, sim.base_url, [*good, '{"text": "broken'], id_field=None)
        assert run_cli("run", str(job)).returncode == 4
        job = _job(
            tmp_path, sim.base_url, [*good, {"text": "fixed", "target_lang": "German"}],
            id_field=None,
        )  # fmt: skip
        out = run_cli("run", str(job))
    assert out.returncode == 0, out.stdout + out.stderr


async def test_a_progress_line_comes_while_every_record_waits(tmp_path: Path, capsys: Any) -> None:
    """Without a TTY the feeder's progress tick never fires while every record waits (here
    for slow answers, one at a time): the runner's heartbeat task still prints a line once
    the interval has passed. The interval is shortened for the test; a minute in production."""
    import batchroute.progress as progress
    from batchroute.runner import RunOptions, run_job_async
    from batchroute.simulator import Scenario, SimulatorThread
    from batchroute.spec import load_spec

    old = progress.LOG_EVERY_S, progress.KEEP_ALIVE_MAX_WAIT_S
    progress.LOG_EVERY_S, progress.KEEP_ALIVE_MAX_WAIT_S = 0.3, 0.05
    try:
        with SimulatorThread(Scenario.from_dict({"latency_ms": 250}), seed=0) as sim:
            job = _job(tmp_path, sim.base_url, texts(6), limits={"concurrency": 1})
            opts = RunOptions(
                api_key="sk-or-v1-test",
                base_url=sim.base_url,
                handle_signals=False,
                bars=False,
                quiet=False,
            )
            report = await run_job_async(load_spec(job), opts)
    finally:
        progress.LOG_EVERY_S, progress.KEEP_ALIVE_MAX_WAIT_S = old
    assert report.counts.done == 6
    assert "progress: " in capsys.readouterr().err


def test_after_a_writer_failure_the_next_run_closes_the_failed_runs_row(tmp_path: Path) -> None:
    """The file was held past output.busy_timeout_s, so the failed run could not write its
    own end to the `runs` row. The next run replays its journal and closes that row: not left
    'running' (which would read as a live run), ended, with the cost of every attempt it made
    (replayed from the journal); and its own row is completed."""
    with simulator("--latency-ms", "20") as sim:
        job = _job(
            tmp_path,
            sim.base_url,
            texts(600),
            limits={"concurrency": 4},
            output={"database": str(tmp_path / "results.duckdb"), "busy_timeout_s": 1},
        )
        db = tmp_path / "results.duckdb"
        with reaped(spawn_run(job)) as run:
            wait_until(lambda: db.exists() and sim.calls() > 50, "the run under way")
            with reaped(_hold(db, 60)) as holder:
                out, err = run.communicate(timeout=60)
                holder.kill()
        assert run.returncode == 1, out + err
        again = run_cli("run", str(job))
    assert again.returncode == 0, again.stderr
    rows = query(
        db,
        "SELECT r.status, r.finished_at IS NOT NULL, r.cost_usd, "
        "(SELECT sum(a.cost_usd) FROM attempts a WHERE a.run_id = r.run_id), "
        "(SELECT count(*) FROM attempts a WHERE a.run_id = r.run_id) "
        "FROM runs r ORDER BY r.started_at",
    )
    assert len(rows) == 2
    (status, ended, cost, attempts_cost, calls), second = rows
    assert calls > 50  # its journaled attempts were replayed under its own run id
    assert ended
    assert cost == attempts_cost
    # Closed as a dead run's row: the failed run could not journal its own end, so the next
    # run cannot tell it from a kill -9 (it did exit 1, not 130; see the design notes).
    assert status == "interrupted"
    assert "1 earlier run(s) had died; marked interrupted" in again.stderr
    assert second[:2] == ("completed", True)
