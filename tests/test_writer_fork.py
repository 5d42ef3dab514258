"""The writer process forked from the run's process (issue 11, `runner/fork.py`): with real
processes, the CLI's run forks its writer (no fresh interpreter, no second `import duckdb`),
the writer commits everything and ends with the run, and a process with a second thread never
forks (it starts the writer the old way)."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import SimClientFactory
from factories import make_spec, texts, write_job, write_jsonl
from subprocs import ENV, job_endpoint, query, reaped, simulator, spawn_run, wait_until

from batchroute.runner import RunOptions, run_job_async, sink
from batchroute.runner.fork import NAME, ForkedWriter, can_fork, fork_writer
from batchroute.types import RunStatus

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


async def test_a_run_in_this_process_forks_its_writer(
    tmp_path: Path, sim_client: SimClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In-process (the library's `run_job_async`): forked when this process has one thread,
    reaped through its pidfd; every row committed and the run's row closed by the writer."""
    if not can_fork():
        pytest.skip("this test process runs other threads: no fork here by design")
    started: list[Any] = []

    async def spy(argv: list[str]) -> ForkedWriter | None:
        started.append(proc := await fork_writer(argv))
        return proc

    monkeypatch.setattr(sink, "fork_writer", spy)
    sim = await sim_client()
    write_jsonl(tmp_path / "in.jsonl", texts(60))
    opts = RunOptions(
        api_key="sk-or-v1-test",
        base_url=str(sim.make_url("/api/v1")),
        handle_signals=False,
        log=lambda _line: None,
    )
    report = await run_job_async(make_spec(tmp_path), opts)
    assert len(started) == 1
    assert isinstance(started[0], ForkedWriter)
    assert started[0].returncode == 0
    assert report.status is RunStatus.COMPLETED
    db = tmp_path / "results.duckdb"
    assert query(db, "SELECT count(*) FROM results WHERE status = 'done'") == [(60,)]
    assert query(db, "SELECT status, records_done FROM runs") == [("completed", 60)]


NO_PIDFD = """
import errno, os, sys
def no_pidfd(pid, flags=0):
    raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))
os.pidfd_open = no_pidfd  # as on Linux before 5.3, or under valgrind
from batchroute.runner import fork, sink
seen = []
async def spy(argv):
    proc = await fork.fork_writer(argv)
    seen.append(type(proc).__name__)
    return proc
sink.fork_writer = spy
from batchroute.cli import main
code = main(["run", sys.argv[1]])
print("writer:", *seen, flush=True)
sys.exit(code)
"""


def test_without_pidfd_the_forked_writer_is_reaped_by_a_thread(tmp_path: Path) -> None:
    """Where the kernel has no pidfd (ENOSYS), the run still forks, and a thread blocked in
    `waitpid` reaps the writer: the CLI's run in a fresh interpreter ends with every row."""
    write_jsonl(tmp_path / "in.jsonl", texts(300))
    with simulator() as sim:
        job = write_job(tmp_path, endpoint=job_endpoint(sim), limits=LIMITS)
        done = subprocess.run(
            [sys.executable, "-c", NO_PIDFD, str(job)],
            capture_output=True,
            text=True,
            env=ENV,
            timeout=120,
            check=False,
        )
    assert done.returncode == 0, done.stderr
    assert "writer: ForkedWriter" in done.stdout
    db = tmp_path / "results.duckdb"
    assert query(db, "SELECT count(*) FROM results WHERE status = 'done'") == [(300,)]
    assert query(db, "SELECT status, records_done FROM runs") == [("completed", 300)]
