"""The run's end (issue 11): the writer process closes the run's row and counts the job's
statuses in its last transaction, so the run's own process never opens the DuckDB file again
after its last answer; whenever the writer could not (it failed, the status changed after),
the run closes its row itself, as before.

Real parts: the simulator on a loopback port, real DuckDB files, the real writer process. The
run's own process is watched by wrapping `ResultStore._tx` (every transaction of the run's
process goes through it; the writer process is another process and is not wrapped).
"""

from __future__ import annotations

import signal
from contextlib import AbstractContextManager
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest
from factories import make_spec, texts, write_job, write_jsonl
from subprocs import job_endpoint, query, reaped, run_cli, simulator, spawn_run, wait_until

from batchroute.runner import RunOptions, run_job_async
from batchroute.runner.book import Book
from batchroute.simulator import Scenario, SimulatorThread
from batchroute.store import ResultStore
from batchroute.types import RunStatus

N = 40


async def _no_sleep(_s: float) -> None:
    return None


def _q(db: Path, sql: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


@pytest.fixture
def late_opens(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The run's process's DuckDB transactions after its book began to finish."""
    seen: list[str] = []
    finishing = [False]
    real_tx, real_finish_soon = ResultStore._tx, Book.finish_soon

    def tx(self: ResultStore, **kw: Any) -> AbstractContextManager[duckdb.DuckDBPyConnection]:
        if finishing[0]:
            seen.append(f"transaction on {self.path.name}")
        return real_tx(self, **kw)

    def finish_soon(self: Book, *a: Any, **kw: Any) -> None:
        finishing[0] = True
        real_finish_soon(self, *a, **kw)

    monkeypatch.setattr(ResultStore, "_tx", tx)
    monkeypatch.setattr(Book, "finish_soon", finish_soon)
    return seen


async def test_the_run_never_opens_the_file_after_its_last_answer(
    tmp_path: Path, late_opens: list[str]
) -> None:
    write_jsonl(tmp_path / "in.jsonl", texts(N))
    spec = make_spec(tmp_path, input=str(tmp_path / "in.jsonl"))
    db = tmp_path / "results.duckdb"
    with SimulatorThread(Scenario.from_dict({"latency_ms": 1})) as sim:
        opts = RunOptions(api_key="sk-or-v1-test", db_path=db, handle_signals=False, quiet=True,
                          sleep=_no_sleep, base_url=sim.base_url, log=[].append)  # fmt: skip
        report = await run_job_async(spec, opts)
        ledger = Decimal(sim.ledger()["total_cost_usd"])
    assert report.status is RunStatus.COMPLETED
    assert report.job_statuses == {"done": N}
    assert late_opens == []  # before: finish_run, then status_counts
    (row,) = _q(db, "SELECT status, records_seen, records_done, records_pending, "
                    "finished_at IS NOT NULL, cost_usd FROM runs")  # fmt: skip
    assert row[:5] == ("completed", N, N, 0, True)
    assert Decimal(row[5]) == report.counts.cost_usd == ledger > 0


async def test_a_status_changed_after_the_writer_closed_the_row_is_written_by_the_run(
    tmp_path: Path, late_opens: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer closed the row as completed; the run then failed (here: its client's close
    raised): the row must say failed, so the run writes it itself."""
    write_jsonl(tmp_path / "in.jsonl", texts(N))
    spec = make_spec(tmp_path, input=str(tmp_path / "in.jsonl"))
    db = tmp_path / "results.duckdb"
    from batchroute.client import OpenRouterClient
    from batchroute.errors import UpstreamError

    real_exit = OpenRouterClient.__aexit__

    async def failing_exit(self: OpenRouterClient, *exc: Any) -> None:
        await real_exit(self, *exc)
        raise UpstreamError("closing the session failed")

    monkeypatch.setattr(OpenRouterClient, "__aexit__", failing_exit)
    with SimulatorThread(Scenario.from_dict({"latency_ms": 1})) as sim:
        opts = RunOptions(api_key="sk-or-v1-test", db_path=db, handle_signals=False, quiet=True,
                          sleep=_no_sleep, base_url=sim.base_url, log=[].append)  # fmt: skip
        with pytest.raises(UpstreamError):
            await run_job_async(spec, opts)
    assert late_opens  # the run wrote the row itself
    assert _q(db, "SELECT status, records_done FROM runs") == [("failed", N)]


def test_a_run_killed_at_any_commit_of_its_writer_loses_nothing_and_its_row_is_closed(
    tmp_path: Path,
) -> None:
    """kill -9 of the run and its writer right after each of the writer's COMMITs in turn
    (before its checkpoint), the last being the run's finish (with its last rows, one
    transaction since stop 24): after each, the run's row says
    completed only when every record is committed; the next run sends only what was not
    answered, ends completed, and leaves no run 'running'."""
    with simulator("--latency-ms", "1") as sim:
        for nth in range(1, 12):
            d = tmp_path / f"kill{nth}"
            d.mkdir()
            write_jsonl(d / "in.jsonl", texts(N))
            job = write_job(d, endpoint=job_endpoint(sim))
            db = d / "results.duckdb"
            with reaped(
                spawn_run(job, env={"BATCHROUTE_TEST_KILL_AT": f"writer-committed:{nth}"})
            ) as p:
                _out, err = p.communicate()
            if p.returncode == 0:  # fewer commits than nth: every kill point was seen
                # Since stop 24 (lat4) a fast first run's schema waits for its first calls and
                # its last segment goes into its finish: 40 records at 1 ms are one COMMIT.
                assert nth > 1, "a run commits at least once"
                (row,) = query(db, "SELECT status, records_done FROM runs")
                assert row == ("completed", N)
                return
            assert p.returncode == -signal.SIGKILL, err
            wait_until(
                lambda db=db: _openable(db), "the killed writer's end (its lock on the file)"
            )
            rows = query(db, "SELECT status, records_done FROM runs") if db.exists() else []
            done = (
                query(db, "SELECT count(*) FROM results WHERE status = 'done'")[0][0] if rows else 0
            )
            for status, records_done in rows:
                assert status == "running" or (status, records_done, done) == ("completed", N, N)
            again = run_cli("run", str(job))
            assert again.returncode == 0, again.stderr
            assert " completed: " in again.stderr + again.stdout
            assert query(db, "SELECT count(*) FROM results WHERE status = 'done'") == [(N,)]
            statuses = sorted(s for (s,) in query(db, "SELECT status FROM runs"))
            assert "running" not in statuses
            assert statuses.count("completed") >= 1
    raise AssertionError("a run of 40 records made 11 commits or more")


def _openable(db: Path) -> bool:
    try:
        if db.exists():
            duckdb.connect(str(db), read_only=True).close()
    except duckdb.IOException:
        return False
    return True
