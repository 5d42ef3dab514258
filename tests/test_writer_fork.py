"""The writer process forked from the run's process (issue 11, `runner/fork.py`): with real
processes, the CLI's run forks its writer (no fresh interpreter, no second `import duckdb`),
the writer commits everything and ends with the run, and a process with a second thread never
forks (it starts the writer the old way)."""

from __future__ import annotations

import threading
from pathlib import Path

from factories import texts, write_job, write_jsonl
from subprocs import job_endpoint, query, reaped, simulator, spawn_run, wait_until

from batchroute.runner.fork import NAME, can_fork

N = 2_000
LIMITS = {"concurrency": 64, "requests_per_minute": None, "timeout_s": 30}


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def test_the_cli_forks_its_writer_which_commits_everything(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in.jsonl", texts(N))
    with simulator("--latency-ms", "20") as sim:
        job = write_job(tmp_path, endpoint=job_endpoint(sim), limits=LIMITS)
        db = tmp_path / "results.duckdb"
        with reaped(spawn_run(job)) as proc:
            forked: list[int] = []

            def look() -> bool:
                forked[:] = [k for k in _children(proc.pid) if _comm(k) == NAME.decode()]
                return bool(forked) or proc.poll() is not None

            wait_until(look, "the run's forked writer process")
            out, err = proc.communicate(timeout=120)
    assert forked, "the run did not fork its writer"
    assert proc.returncode == 0, err
    # The child never flushed the run's buffered output: every line the run printed is its own.
    lines = [x for x in out.splitlines() if x.strip()]
    assert len(lines) == len(set(lines)), out
    rows = query(
        db, "SELECT count(*), count(DISTINCT record_key) FROM results WHERE status = 'done'"
    )
    assert rows == [(N, N)]


def test_no_fork_beside_a_second_thread() -> None:
    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    try:
        assert not can_fork()
    finally:
        stop.set()
        t.join()
