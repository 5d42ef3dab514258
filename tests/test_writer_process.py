"""The writer process (issue 11): DuckDB is written by a child of the run, never by the run's
own process while records flow. With real processes: it never outlives a run killed with -9,
a Ctrl-C ends both cleanly with everything committed, and a writer killed on its own stops the
run with a clear error and loses nothing (the next run replays its journal segments)."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import duckdb
from factories import texts, write_job, write_jsonl
from subprocs import (
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

from batchroute.journal import journal_files, journal_path
from batchroute.runner.fork import NAME as FORKED_NAME

N = 3_000
LIMITS = {"concurrency": 64, "requests_per_minute": None, "timeout_s": 30}
REQUEST = {"max_tokens": 2048}  # no finish_length escalation: one billed call per record


def _job(tmp_path: Path, sim: Simulator, n: int = N) -> tuple[Path, Path]:
    write_jsonl(tmp_path / "in.jsonl", texts(n))
    job = write_job(tmp_path, endpoint=job_endpoint(sim), limits=LIMITS, request=REQUEST)
    return job, tmp_path / "results.duckdb"


def _children(pid: int) -> list[int]:
    """The live child processes of `pid` (Linux /proc)."""
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            kids += [int(k) for k in (task / "children").read_text().split()]
    return [k for k in kids if _alive(k)]


def _alive(pid: int) -> bool:
    """Running (a zombie waiting to be reaped holds no file and does nothing: not alive)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _is_writer(pid: int) -> bool:
    """The writer process: exec'd (`python -m batchroute.writer`) or forked from the run
    (runner/fork.py names it in /proc/PID/comm; its command line is the run's)."""
    return "batchroute.writer" in _cmdline(pid) or _comm(pid) == FORKED_NAME.decode()


def _writer_of(pid: int) -> int:
    """Wait for the run's writer process and return its pid."""
    found: list[int] = []

    def look() -> bool:
        found[:] = [k for k in _children(pid) if _is_writer(k)]
        return bool(found)

    wait_until(look, "the writer process")
    return found[0]


def _assert_all_done_once(db: Path, n: int) -> None:
    rows = query(db, "SELECT record_key, status FROM results WHERE job_name = 't'")
    assert len(rows) == len({k for k, _ in rows}) == n
    assert {s for _, s in rows} == {"done"}


def test_a_run_killed_with_9_leaves_no_writer_process_and_loses_nothing(tmp_path: Path) -> None:
    """kill -9 of the run while records flow: its writer process goes with it (the kernel
    kills it), so nothing holds the file or writes behind the next run's replay; the next run
    completes the job with no call paid twice beyond the calls in flight."""
    with simulator("--latency-ms", "20") as sim:
        job, db = _job(tmp_path, sim)
        with reaped(spawn_run(job)) as proc:
            wait_holding_lock(proc, db)
            writer = _writer_of(proc.pid)
            wait_until(lambda: sim.calls() >= 500 or proc.poll() is not None, "calls")
            assert proc.poll() is None, "the kill must land mid-run"
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            wait_until(lambda: not _alive(writer), "the writer process to die with the run")
        paid_before = sim.calls()
        final = run_cli("run", str(job))
        ledger = sim.ledger()
    assert final.returncode == 0, final.stderr
    assert paid_before < N
    _assert_all_done_once(db, N)
    assert ledger["calls"] - N <= LIMITS["concurrency"]  # only calls in flight were lost
    check_integrity(db)
    assert journal_files(journal_path(db)) == []


def test_ctrl_c_ends_the_run_and_its_writer_with_everything_committed(tmp_path: Path) -> None:
    """A Ctrl-C mid-run: exit 130, the writer process ended (it ignores the terminal's
    SIGINT and is told when to stop), no journal file left, and every billed call is in the
    database: nothing was left for a replay."""
    with simulator("--latency-ms", "20") as sim:
        job, db = _job(tmp_path, sim)
        with reaped(spawn_run(job)) as proc:
            wait_holding_lock(proc, db)
            writer = _writer_of(proc.pid)
            wait_until(lambda: sim.calls() >= 500 or proc.poll() is not None, "calls")
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 130, err
            assert not _alive(writer)
        billed = {g["id"] for g in sim.ledger()["generations"]}
    assert journal_files(journal_path(db)) == []
    recorded = {g for (g,) in query(db, "SELECT generation_id FROM attempts") if g}
    assert recorded == billed
    assert query(db, "SELECT status FROM runs") == [("interrupted",)]


def test_a_writer_killed_alone_stops_the_run_and_its_rows_are_replayed(tmp_path: Path) -> None:
    """The writer process killed under a live run: the run stops with a clear error (not a
    hang, not a traceback), its uncommitted rows stay in the journal segments, and the next
    run replays them: every record done once, nothing paid twice beyond calls in flight."""
    with simulator("--latency-ms", "20") as sim:
        job, db = _job(tmp_path, sim)
        with reaped(spawn_run(job)) as proc:
            wait_holding_lock(proc, db)
            writer = _writer_of(proc.pid)
            wait_until(lambda: sim.calls() >= 500 or proc.poll() is not None, "calls")
            assert proc.poll() is None, "the kill must land mid-run"
            os.kill(writer, signal.SIGKILL)  # the writer alone; the run lives on
            _, err = proc.communicate(timeout=120)
        assert proc.returncode != 0
        assert "writer process ended unexpectedly" in err
        assert "Traceback" not in err
        final = run_cli("run", str(job))
        ledger = sim.ledger()
    assert final.returncode == 0, final.stderr
    _assert_all_done_once(db, N)
    assert ledger["calls"] - N <= LIMITS["concurrency"]
    check_integrity(db)
    assert journal_files(journal_path(db)) == []


def _hold(db: Path) -> duckdb.DuckDBPyConnection:
    """Open the file as a reader would (a BI tool), once the writer lets go of it."""
    con: list[duckdb.DuckDBPyConnection] = []

    def take() -> bool:
        try:
            con.append(duckdb.connect(str(db)))
        except duckdb.IOException:
            return False
        return True

    wait_until(take, "the file to be free", poll=0.005)
    return con[0]


def test_a_writer_stuck_on_a_held_file_still_dies_with_the_run(tmp_path: Path) -> None:
    """The writer process is retrying a commit (a reader holds the file; busy timeout 600 s)
    when the run is killed with -9: it dies at once with the run (the kernel's parent-death
    signal), not when the reader lets go, so it never writes behind the next run's replay."""
    with simulator("--latency-ms", "20") as sim:
        job, db = _job(tmp_path, sim)
        with reaped(spawn_run(job)) as proc:
            wait_holding_lock(proc, db)
            writer = _writer_of(proc.pid)
            wait_until(lambda: sim.calls() >= 200 or proc.poll() is not None, "calls")
            holder = _hold(db)
            try:
                # A segment handed over while the file is held: the writer is retrying it.
                segments = lambda: len(journal_files(journal_path(db))) >= 3  # noqa: E731
                wait_until(lambda: segments() or proc.poll() is not None, "a waiting segment")
                assert proc.poll() is None
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                wait_until(lambda: not _alive(writer), "the writer to die with the run")
            finally:
                holder.close()
        final = run_cli("run", str(job))
        ledger = sim.ledger()
    assert final.returncode == 0, final.stderr
    _assert_all_done_once(db, N)
    assert ledger["calls"] - N <= LIMITS["concurrency"]
    assert journal_files(journal_path(db)) == []
