"""A reader holds the DuckDB file before a run starts (a `report` or an SQL client left open
overnight): the nightly run still starts and sends (design-notes, "A run starts while a reader
holds the file").

Real processes: the CLI, a reader process holding the real file, the simulator on a real
loopback port (in this process, its sleep a `Gate` where a test needs answers held).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

from factories import texts, write_job, write_jsonl
from subprocs import KEY_ENV, query, reaped, run_cli, spawn_run, wait_until
from test_reader_holds_file import HELD_MS, Gate, hold, reader_ready

from batchroute.journal import journal_files, journal_path
from batchroute.simulator import Scenario, SimulatorThread
from batchroute.usd import usd

CONCURRENCY = 8
LIMITS = {"concurrency": CONCURRENCY, "requests_per_minute": None, "timeout_s": 3600}
REQUEST = {"max_tokens": 2048}  # no finish_length escalation: one billed call per record

HOLD = """
import sys, duckdb
con = duckdb.connect(sys.argv[1], read_only=sys.argv[2] == "ro")
con.execute("SELECT count(*) FROM results").fetchall()
print("held", flush=True)
sys.stdin.read()
"""


@contextmanager
def holding(db: Path, how: str) -> Iterator[subprocess.Popen[str]]:
    """A process with `db` open (`how`: "ro" read-only, as `report` or `duckdb -readonly`;
    "rw" as the DuckDB CLI's default), until the block ends."""
    with subprocess.Popen(
        [sys.executable, "-c", HOLD, str(db), how],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        assert holder.stdout is not None
        assert holder.stdin is not None
        try:
            assert holder.stdout.readline() == "held\n"
            yield holder
        finally:
            if not holder.stdin.closed:
                holder.stdin.close()
            holder.wait(timeout=60)


def let_go(holder: subprocess.Popen[str]) -> None:
    assert holder.stdin is not None
    holder.stdin.close()
    holder.wait(timeout=60)


def _job(tmp_path: Path, sim: SimulatorThread, n: int, **kw: object) -> Path:
    write_jsonl(tmp_path / "in.jsonl", texts(n))
    endpoint = {"base_url": sim.base_url, "api_key_env": KEY_ENV}
    return write_job(tmp_path, endpoint=endpoint, limits=LIMITS, request=REQUEST, **kw)


def _calls(sim: SimulatorThread) -> int:
    return int(sim.ledger()["calls"])  # answered (billed) calls


def test_a_read_only_reader_open_before_the_start_does_not_hold_the_run_back(
    tmp_path: Path,
) -> None:
    """The reader opens the file read-only before the run starts and keeps it until the run
    has made every call: the run sends them all meanwhile (before: it waited for the file up
    to output.busy_timeout_s, sending nothing), cannot end before its rows are written, and
    once the reader lets go the writer writes the run's row and every result."""
    first, n = 10, 30
    with SimulatorThread(Scenario(latency_ms=1)) as sim:
        job = _job(tmp_path, sim, first)
        db = tmp_path / "results.duckdb"
        assert run_cli("run", str(job)).returncode == 0
        write_jsonl(tmp_path / "in.jsonl", texts(n))
        with holding(db, "ro") as holder, reaped(spawn_run(job)) as proc:
            wait_until(lambda: _calls(sim) >= n or proc.poll() is not None, "every call")
            assert proc.poll() is None, proc.communicate()[1]  # its rows are not written yet
            assert query(db, "SELECT count(*) FROM results") == [(first,)]
            let_go(holder)
            _out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
        assert _calls(sim) == n  # nothing sent twice
    assert f"is open read-only in process {holder.pid}" in err
    assert f"{first} already final" in err
    assert query(db, "SELECT status, count(*) FROM results GROUP BY ALL") == [("done", n)]
    runs = query(db, "SELECT status, records_done FROM runs ORDER BY started_at")
    assert runs == [("completed", first), ("completed", n - first)]
    assert journal_files(journal_path(db)) == []


def _killed_under_a_reader(tmp_path: Path, sim: SimulatorThread, gate: Gate, n: int) -> Path:
    """The first run killed with -9 while a read-write reader held the file: FAST answers
    journaled and none written, CONCURRENCY calls in flight (test_reader_holds_file's)."""
    job = _job(tmp_path, sim, n)
    db = tmp_path / "results.duckdb"
    with reader_ready(db) as holder, reaped(spawn_run(job)) as proc:
        wait_until(lambda: int(sim.ledger()["in_flight"]) >= CONCURRENCY or proc.poll() is not None,
                   "the run's first calls")  # fmt: skip
        assert proc.poll() is None, "the run ended early"
        hold(holder)
        gate.open()
        wait_until(lambda: gate.held >= CONCURRENCY or proc.poll() is not None, "held calls")
        assert proc.poll() is None, "the run ended early"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    return job


FAST = 10


def _script(n: int) -> Scenario:
    answered, held = {"fault": "ok", "latency_ms": 1}, {"fault": "ok", "latency_ms": HELD_MS}
    return Scenario.model_validate(
        {"script": {"openai/gpt-4o-mini": [answered] * FAST + [held] * n}}
    )


def test_a_killed_runs_journal_counts_before_the_first_call_while_a_reader_holds_the_file(
    tmp_path: Path,
) -> None:
    """A killed run left FAST answers and CONCURRENCY calls in flight in its journal only. A
    read-only reader opens the file; the next run starts beside it: today's spend it announces
    (before its first call) is the dry run's, journal included, not $0.00; it sends only the
    records the journal does not hold; the writer replays the journal and writes everything
    once the reader lets go; nothing is paid twice."""
    n = 40
    gate = Gate()
    with SimulatorThread(_script(n), sleep=gate) as sim:
        job = _killed_under_a_reader(tmp_path, sim, gate, n)
        db = tmp_path / "results.duckdb"
        sim.set_scenario(Scenario())
        assert query(db, "SELECT count(*) FROM results WHERE status = 'done'") == [(0,)]
        with holding(db, "ro") as holder:
            dry = run_cli("run", str(job), "--dry-run", "--json")
            assert dry.returncode == 0, dry.stderr
            with reaped(spawn_run(job)) as proc:
                wait_until(lambda: _calls(sim) >= n or proc.poll() is not None, "every call")
                assert proc.poll() is None, proc.communicate()[1]
                let_go(holder)
                _out, err = proc.communicate(timeout=120)
                assert proc.returncode == 0, err
        assert _calls(sim) == n  # FAST before the kill, n - FAST now: none twice
    said = json.loads(dry.stdout)
    assert said["records"] == n - FAST
    spend = re.search(r"today's spend (\$[0-9.]+) of", err)
    assert spend is not None, err
    assert usd(Decimal(said["spent_today_usd"])) == spend.group(1) != "$0.00"
    assert query(db, "SELECT status, count(*) FROM results GROUP BY ALL") == [("done", n)]
    killed = query(db, "SELECT count(*) FROM attempts WHERE outcome = 'killed'")
    assert killed == [(CONCURRENCY,)]
    assert journal_files(journal_path(db)) == []


def test_the_cap_holds_with_a_killed_runs_journal_under_a_reader(tmp_path: Path) -> None:
    """As above with a cap a hair above what the killed run spent (its journal only): the run
    beside the reader finds no room for a call (exit 3) and the bill stays under the cap; a
    run that missed the journal's spend would have the whole cap to send with."""
    n = 40
    gate = Gate()
    with SimulatorThread(_script(n), sleep=gate) as sim:
        job = _killed_under_a_reader(tmp_path, sim, gate, n)
        db = tmp_path / "results.duckdb"
        sim.set_scenario(Scenario())
        dry = json.loads(run_cli("run", str(job), "--dry-run", "--json").stdout)
        spent = Decimal(dry["spent_today_usd"])
        cap = spent + Decimal("0.000001")  # no call fits: a run blind to the journal sends
        with holding(db, "ro") as holder, reaped(spawn_run(job, "--budget", str(cap))) as proc:
            wait_until(
                lambda: _journaled(db, "pending") >= n - FAST or proc.poll() is not None,
                "every record left pending",
            )
            let_go(holder)
            _out, err = proc.communicate(timeout=120)
        assert proc.returncode == 3, err
        assert "daily budget reached" in err
        billed = Decimal(sim.ledger()["total_cost_usd"])
        assert _calls(sim) == FAST
    assert billed <= cap, (billed, cap)


def test_a_kill_under_a_reader_before_the_start_loses_nothing_journaled(tmp_path: Path) -> None:
    """A run started beside a read-only reader is killed with -9 after its calls were
    answered (none written: the reader still holds the file). The next run, the reader gone,
    replays everything and pays for nothing twice."""
    first, n = 10, 30
    with SimulatorThread(Scenario(latency_ms=1)) as sim:
        job = _job(tmp_path, sim, first)
        db = tmp_path / "results.duckdb"
        assert run_cli("run", str(job)).returncode == 0
        write_jsonl(tmp_path / "in.jsonl", texts(n))
        with holding(db, "ro"), reaped(spawn_run(job)) as proc:
            wait_until(lambda: _calls(sim) >= n or proc.poll() is not None, "every call")
            assert proc.poll() is None
            wait_until(lambda: _journaled(db, "done") >= n - first, "the answers journaled")
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        assert query(db, "SELECT count(*) FROM results") == [(first,)]
        again = run_cli("run", str(job))
        assert again.returncode == 0, again.stderr
        assert _calls(sim) == n
    assert query(db, "SELECT status, count(*) FROM results GROUP BY ALL") == [("done", n)]
    assert journal_files(journal_path(db)) == []


def _journaled(db: Path, status: str) -> int:
    """How many records the journal files hold a result of `status` for."""
    keys = set()
    for path in journal_files(journal_path(db)):
        for line in path.read_bytes().splitlines():
            if line.startswith(b"r"):
                try:
                    row = json.loads(line[1:])
                except ValueError:  # the line the run is writing now
                    continue
                if row.get("status") == status:
                    keys.add(row["record_key"])
    return len(keys)


def test_a_read_write_holder_before_the_start_is_named_and_exits_5(tmp_path: Path) -> None:
    """A process with the file open read-write (DuckDB's CLI default) lets no one read it,
    so the run cannot know today's spend: it says at once which process holds the file, waits
    output.busy_timeout_s, and exits 5 (the database is locked) having sent nothing; what
    the database held is untouched and the next run completes."""
    first, n = 5, 12
    with SimulatorThread(Scenario(latency_ms=1)) as sim:
        job = _job(tmp_path, sim, first, output={"database": str(tmp_path / "results.duckdb"),
                                                 "busy_timeout_s": 2})  # fmt: skip
        db = tmp_path / "results.duckdb"
        assert run_cli("run", str(job)).returncode == 0
        write_jsonl(tmp_path / "in.jsonl", texts(n))
        with holding(db, "rw") as holder:
            held = run_cli("run", str(job))
        assert held.returncode == 5, held.stderr
        assert f"is open for writing in process {holder.pid}" in held.stderr
        assert "sent nothing" in held.stderr
        assert _calls(sim) == first
        again = run_cli("run", str(job))
        assert again.returncode == 0, again.stderr
        assert _calls(sim) == n
    assert query(db, "SELECT status, count(*) FROM results GROUP BY ALL") == [("done", n)]
