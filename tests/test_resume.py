"""Resume, lock, --retry-failed, --rerun-changed, report during a run, and cron output: the real
CLI in a subprocess, the simulator in its own process, a real DuckDB file."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path
from typing import Any

from factories import texts, write_job, write_jsonl
from subprocs import (
    Simulator,
    job_endpoint,
    query,
    reaped,
    run_cli,
    simulator,
    spawn_run,
    wait_holding_lock,
    wait_until,
)

LIMITS = {"concurrency": 16, "requests_per_minute": None, "timeout_s": 30}
REQUEST = {"max_tokens": 2048}  # no finish_length escalations: one call per record
SUMMARY = re.compile(
    r"^batchroute: job t run \w+ (?P<status>\w+): (?P<done>\d+) done, (?P<failed>\d+) failed, "
    r"(?P<invalid>\d+) invalid, (?P<pending>\d+) pending, (?P<final>\d+) already final; "
    r"\$[\d.]+ spent; [\d.]+ s; exit (?P<code>\d+)(; (?P<stale>\d+) stale [^;]*)?"
    r"(; earlier runs left (?P<earlier_failed>\d+) failed and "
    r"(?P<earlier_invalid>\d+) invalid .*)?$"
)


def _job(tmp_path: Path, sim: Simulator, records: list[Any], **overrides: Any) -> Path:
    write_jsonl(tmp_path / "in.jsonl", records)
    overrides = {"limits": LIMITS, "request": REQUEST, **overrides}
    return write_job(tmp_path, endpoint=job_endpoint(sim), **overrides)


def _summary(stdout: str) -> dict[str, str]:
    lines = stdout.strip().splitlines()
    assert len(lines) == 1, stdout
    m = SUMMARY.match(lines[0])
    assert m is not None, lines[0]
    return m.groupdict()


def _results(db: Path) -> dict[str, tuple[str, str | None]]:
    rows = query(db, "SELECT record_key, status, generation_id FROM results")
    return {k: (s, g) for k, s, g in rows}


def test_resume_of_a_finished_job_makes_no_call(tmp_path: Path) -> None:
    """The second run skips every record in bulk: zero billed calls, N already final, exit 0."""
    with simulator() as sim:
        job = _job(tmp_path, sim, texts(300))
        first = run_cli("run", str(job))
        assert first.returncode == 0, first.stderr
        paid = sim.calls()
        assert paid == 300
        again = run_cli("run", str(job))
        assert again.returncode == 0, again.stderr
        assert sim.calls() == paid
    s = _summary(again.stdout)
    assert (s["status"], s["done"], s["final"], s["code"]) == ("completed", "0", "300", "0")


def test_second_run_on_a_held_database_exits_5_naming_the_pid(tmp_path: Path) -> None:
    """While a run holds the database, another `run` exits 5 at once naming the holder's PID;
    once the holder is SIGKILLed its lock is stale: the next run takes it over and marks the
    dead run `interrupted`."""
    with simulator("--latency-ms", "200") as sim:
        job = _job(tmp_path, sim, texts(400), limits={**LIMITS, "concurrency": 4})
        db = tmp_path / "results.duckdb"
        with reaped(spawn_run(job)) as first:
            wait_holding_lock(first, db)
            wait_until(lambda: sim.calls() > 0, "the first run's calls")
            second = run_cli("run", str(job), timeout=60)
            assert second.returncode == 5, second.stderr
            assert f"PID {first.pid}" in second.stderr
            assert second.stdout == ""
            assert first.poll() is None  # the running one carries on
            first.send_signal(signal.SIGKILL)
            first.wait()
        assert query(db, "SELECT status FROM runs") == [("running",)]  # left by the dead run
        sim.set_scenario({})
        third = run_cli("run", str(job))
    assert third.returncode == 0, third.stderr
    assert "1 earlier run(s) had died; marked interrupted" in third.stderr
    statuses = [s for (s,) in query(db, "SELECT status FROM runs ORDER BY started_at")]
    assert statuses == ["interrupted", "completed"]
    assert {s for s, _ in _results(db).values()} == {"done"}


def test_retry_failed_redoes_exactly_the_failed_and_invalid_records(tmp_path: Path) -> None:
    """Failed (both models of the chain answer 500) and invalid (missing field) records are
    final by default; --retry-failed sends exactly those again and leaves the rest alone."""
    records: list[Any] = texts(200)
    for r in records[:5]:
        del r["text"]  # invalid: the template needs {text}
    failing = {  # empty answers fail the quality check: `failed` (a 500 would be `pending`)
        "models": {
            "openai/gpt-4o-mini": {"rate_empty": 0.3},
            "google/gemini-2.0-flash-001": {"rate_empty": 1.0},
        }
    }
    limits = {**LIMITS, "max_attempts": 1, "max_escalations": 0}
    with simulator() as sim:
        sim.set_scenario(failing)
        job = _job(tmp_path, sim, records, limits=limits)
        db = tmp_path / "results.duckdb"
        first = run_cli("run", str(job))
        assert first.returncode == 4, first.stderr
        before = _results(db)
        failed = {k for k, (s, _) in before.items() if s == "failed"}
        invalid = {k for k, (s, _) in before.items() if s == "invalid"}
        assert len(invalid) == 5
        assert 20 <= len(failed) <= 120
        sim.set_scenario({})

        plain = run_cli("run", str(job))  # without the flag: nothing is redone
        assert plain.returncode == 4  # failed and invalid records remain in the job
        plain_summary = _summary(plain.stdout)
        assert plain_summary["final"] == "200"
        assert int(plain_summary["earlier_failed"]) == len(failed)
        assert int(plain_summary["earlier_invalid"]) == 5
        assert _results(db) == before

        write_jsonl(tmp_path / "in.jsonl", texts(200))  # the invalid lines are fixed
        paid = sim.calls()
        retry = run_cli("run", str(job), "--retry-failed")
        assert retry.returncode == 0, retry.stderr
        assert sim.calls() - paid == len(failed) + len(invalid)
    after = _results(db)
    assert {s for s, _ in after.values()} == {"done"}
    redone = {k for k in after if after[k] != before[k]}
    assert redone == failed | invalid
    s = _summary(retry.stdout)
    assert int(s["done"]) == len(failed) + len(invalid)
    assert int(s["final"]) == 200 - len(failed) - len(invalid)


def test_rerun_changed_redoes_exactly_the_records_whose_request_changed(tmp_path: Path) -> None:
    """Changed prompts (7 edited records) are reported stale and kept without the flag;
    --rerun-changed redoes exactly those. A new max_tokens makes every record stale."""
    with simulator() as sim:
        job = _job(tmp_path, sim, texts(100))
        db = tmp_path / "results.duckdb"
        assert run_cli("run", str(job)).returncode == 0
        first = _results(db)

        edited = texts(100)
        for r in edited[10:17]:
            r["text"] += " (edited)"
        write_jsonl(tmp_path / "in.jsonl", edited)
        paid = sim.calls()
        kept = run_cli("run", str(job))
        assert kept.returncode == 0, kept.stderr
        assert sim.calls() == paid
        assert _summary(kept.stdout)["stale"] == "7"
        assert _results(db) == first

        rerun = run_cli("run", str(job), "--rerun-changed")
        assert rerun.returncode == 0, rerun.stderr
        assert sim.calls() - paid == 7
        second = _results(db)
        assert {k for k in second if second[k] != first[k]} == {r["id"] for r in edited[10:17]}
        assert _summary(run_cli("run", str(job)).stdout)["stale"] is None  # nothing stale now

        job = _job(tmp_path, sim, edited, request={"max_tokens": 1024})
        paid = sim.calls()
        stale = run_cli("run", str(job))
        assert _summary(stale.stdout)["stale"] == "100"
        assert sim.calls() == paid
        assert run_cli("run", str(job), "--rerun-changed").returncode == 0
        assert sim.calls() - paid == 100


def test_report_works_while_a_run_is_active(tmp_path: Path) -> None:
    """The runner holds the DuckDB file only while flushing, so `report` (retrying briefly)
    succeeds again and again during a run, and sees the run's progress."""
    with simulator("--latency-ms", "100") as sim:
        job = _job(tmp_path, sim, texts(3000), limits={**LIMITS, "concurrency": 4})  # ~75 s
        db = tmp_path / "results.duckdb"
        seen: list[int] = []

        def flushed_since(calls: int) -> bool:
            """Report once more: True (and the count kept) once it shows a flush after `calls`."""
            rep = run_cli("report", str(db), "--format", "json", timeout=60)
            assert rep.returncode == 0, rep.stderr
            now: int = json.loads(rep.stdout)["totals"]["calls"]
            if now > calls:
                seen.append(now)
            return now > calls

        with reaped(spawn_run(job)) as proc:
            wait_holding_lock(proc, db)
            wait_until(lambda: sim.calls() > 0, "the first calls (the store is open)")
            for _ in range(4):  # four reports, each after a further flush (all must succeed)
                wait_until(lambda: flushed_since(seen[-1] if seen else 0), "a flush in the report")
                assert proc.poll() is None, "the run must still be active"
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=120)
            assert proc.returncode == 130
    assert seen == sorted(seen)
    assert 0 < seen[0] < seen[-1] < 3000


def test_cron_output_without_a_tty(tmp_path: Path) -> None:
    """Pipes, no TTY: no bars (no carriage return, no tqdm), one start line, no progress line in
    a run shorter than a minute, one summary line with counts, cost and exit status; --quiet
    prints only the summary."""
    with simulator() as sim:
        job = _job(tmp_path, sim, texts(300))
        loud = run_cli("run", str(job))
        write_jsonl(tmp_path / "in.jsonl", texts(300, prefix="q"))
        quiet = run_cli("run", str(job), "--quiet")
    for proc in (loud, quiet):
        assert proc.returncode == 0, proc.stderr
        assert "\r" not in proc.stdout + proc.stderr
        assert "rec/s" not in proc.stderr
        assert "it/s" not in proc.stderr
    s = _summary(loud.stdout)
    assert (s["status"], s["done"], s["code"]) == ("completed", "300", "0")
    lines = loud.stderr.strip().splitlines()
    starts = [ln for ln in lines if re.match(r"^run \w+: job t, 0 records already final", ln)]
    assert len(starts) == 1, loud.stderr
    assert "E-" not in starts[0]  # money in plain notation
    assert not [ln for ln in lines if ln.startswith("progress:")]
    assert quiet.stderr == ""
    s = _summary(quiet.stdout)
    assert (s["done"], s["final"], s["code"]) == ("300", "0", "0")  # new keys


def test_journal_replay_commits_unflushed_rows_once(tmp_path: Path) -> None:
    """A killed run's journal: rows of a flush that committed just before the kill
    (`.flushing` left behind) are not written twice; rows never flushed are recovered."""
    from datetime import datetime
    from decimal import Decimal

    from batchroute.journal import Journal
    from batchroute.runner.recover import recover_journal
    from batchroute.store import ResultStore
    from batchroute.types import AttemptOutcome, AttemptRow, RecordStatus, ResultRow

    db = tmp_path / "r.duckdb"
    store = ResultStore(db)
    store.migrate()
    now = datetime(2026, 5, 28, 12, 0, 0)

    def rows(key: str) -> tuple[ResultRow, AttemptRow]:
        cost = Decimal("0.000123456789")
        res = ResultRow("t", key, "run1", 1, RecordStatus.DONE, cost_usd=cost, attempts=1)
        res.created_at = now
        att = AttemptRow("run1", "t", key, 1, "mid", "m", now, 5, 200, AttemptOutcome.OK)
        att.cost_usd = cost
        return res, att

    journal = Journal(db)
    journal.open()
    a_res, a_att = rows("a")
    journal.append(a_att)
    journal.append(a_res)
    assert journal.rotate()
    store.write([a_res], [a_att])  # committed, then "killed" before journal.flushed()
    b_res, b_att = rows("b")
    journal.append(b_att)
    journal.append(b_res)  # never flushed
    del journal  # the process dies: no close

    assert recover_journal(store) == 1
    assert recover_journal(store) == 0  # idempotent
    got = query(db, "SELECT record_key, cost_usd, attempts FROM results ORDER BY 1")
    assert got == [("a", Decimal("0.000123456789"), 1), ("b", Decimal("0.000123456789"), 1)]
    assert query(db, "SELECT count(*) FROM attempts") == [(2,)]
    assert not list(tmp_path.glob("*.journal*"))
