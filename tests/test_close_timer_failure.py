"""A hand-over that fails on `Book.close`'s timer reaches the run (the last stop's open question).

`Book.close` hands the journal over `TAIL_FLUSH_S` after the workers are done, from a loop
timer, while the run drains its /generation polls. That hand-over closes the journal, renames
it to a numbered segment and opens a new journal file; if the open fails (the process at its
open-file limit: the syncer thread still holds the old file while it syncs it, so a rotation
needs one more descriptor for a moment, at concurrency 2,048 under `ulimit -n 1024`, say), the
exception went to the event loop's handler (a traceback on stderr) and nowhere else: the run
ended "completed" with no error and no note, its last rows in a segment no writer was asked to
commit (in DuckDB only after the next run's replay), and every row journaled after it dropped
(the journal is closed). The same failure inside the writer task stops the run.

Real parts: a real writer process, a real DuckDB file, real journal segments; the failure is
the new journal file's `open` refused with EMFILE (injected: a descriptor limit that bites
only while the syncer holds the old file is a race no test can win under load).
"""

from __future__ import annotations

import asyncio
import errno
from pathlib import Path
from typing import Any

import pytest
from test_run_end_fold import NOW

from batchroute.errors import StoreError
from batchroute.journal import Journal, journal_files, read_journal
from batchroute.runner import book as book_module
from batchroute.runner.book import Book
from batchroute.runner.setup import close_store
from batchroute.runner.work import Control, utcnow
from batchroute.store import ResultStore
from batchroute.types import Record, RunStatus

WAIT_S = 60.0  # a deadline for a condition, never a sleep


def _at_the_fd_limit(self: Journal) -> None:
    raise OSError(errno.EMFILE, "Too many open files", str(self.path))


async def test_a_hand_over_that_fails_on_the_close_timer_reaches_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: the loop's handler got the OSError; `close_store` said nothing, no error."""
    monkeypatch.setattr(book_module, "TAIL_FLUSH_S", 0.0)  # the timer fires at once
    db = tmp_path / "results.duckdb"
    store = ResultStore(db, write_timeout=60)
    store.begin_run("r1", "t", "job.yaml", NOW, "test", migrate=True)
    journal = Journal(db)
    journal.open()
    book = Book(store, journal, run_id="r1", job_name="t", now=utcnow)
    loop = asyncio.get_running_loop()
    handled: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: handled.append(context))
    await book.start_writer()
    work = asyncio.ensure_future(book.writer())
    try:
        book.invalid(Record(1, "a", None, "not JSON"), "not JSON")
        monkeypatch.setattr(Journal, "open", _at_the_fd_limit)
        book.close()  # the workers are done: the hand-over goes on the timer
        await work
        deadline = loop.time() + WAIT_S
        while journal.path.exists():  # renamed to a segment, and no new file opened
            assert loop.time() < deadline, "the timer's hand-over never ran"
            await asyncio.sleep(0.01)
        await asyncio.sleep(0)
        book.finish_soon(RunStatus.COMPLETED)
        await book.finish()
        control = Control(lambda _line: None)
        control.status = RunStatus.COMPLETED
        note = None
        if book.ended_as(RunStatus.COMPLETED) is None:  # as `Runner._close_store`
            note = close_store(store, book, control, "r1", utcnow)
    finally:
        loop.set_exception_handler(None)
        journal.close()
    assert isinstance(control.error, StoreError), "the run was not told"
    assert note is not None
    assert "Too many open files" in note, note
    # Nothing is lost: the row is in a segment beside the file, for the next run's replay.
    results, _ = read_journal(*journal_files(journal.path))
    assert [r.record_key for r in results] == ["a"]
    assert handled == [], "the failure went to the event loop's handler"
