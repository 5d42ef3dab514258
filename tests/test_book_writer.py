"""The book's writer, on real DuckDB files and a real writer process (`batchroute.writer`).

The run only journals rows; the writer process commits the closed segments. When the run is
cancelled mid-commit (a reader holds the file), what was handed over and what was booked
after is still committed before the run ends; when the file stays held past the busy timeout,
the run hears a StoreError and every row stays in the journal for the next run's replay.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import duckdb
import pytest
from subprocs import until

from batchroute.errors import StoreError
from batchroute.journal import Journal, journal_files
from batchroute.runner.book import Book
from batchroute.runner.recover import recover_journal
from batchroute.runner.work import utcnow
from batchroute.store import ResultStore
from batchroute.types import Record


def _book(db: Path, timeout: float) -> tuple[Book, Journal, ResultStore]:
    store = ResultStore(db, write_timeout=timeout)
    store.migrate()
    journal = Journal(db)
    journal.open()
    return Book(store, journal, run_id="r1", job_name="t", now=utcnow), journal, store


def _keys(db: Path) -> list[tuple[str]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute("SELECT record_key FROM results ORDER BY 1").fetchall()  # type: ignore[return-value]
    finally:
        con.close()


async def test_a_cancelled_writer_still_commits_what_it_handed_over(tmp_path: Path) -> None:
    db = tmp_path / "results.duckdb"
    book, journal, _ = _book(db, timeout=60)
    holder = duckdb.connect(str(db))  # a reader holds the file: the commit waits and retries
    try:
        writer = asyncio.ensure_future(book.writer())
        book.invalid(Record(1, "a", None, "not JSON"), "not JSON")
        # The timed hand-over has closed the journal as a segment and sent it.
        await until(lambda: len(journal.files()) >= 2, "a segment")
        writer.cancel()  # the run is cancelled
        await asyncio.gather(writer, return_exceptions=True)
        book.invalid(Record(2, "b", None, "not JSON"), "not JSON")  # booked after (a worker)
        finish = asyncio.ensure_future(book.finish())
        await asyncio.sleep(0.05)
        assert not finish.done(), "finish must wait for the commit the held file delays"
    finally:
        holder.close()  # the writer process's commit can now go through
    await finish
    book.flush_last()  # what the run's close does: nothing is left for it
    journal.close()
    assert _keys(db) == [("a",), ("b",)]
    assert journal_files(journal.path) == []
    assert not book.writer_failed


async def test_a_file_held_past_the_busy_timeout_stops_the_run_and_keeps_every_row(
    tmp_path: Path,
) -> None:
    db = tmp_path / "results.duckdb"
    book, journal, store = _book(db, timeout=0.5)
    holder = duckdb.connect(str(db))
    try:
        writer = asyncio.ensure_future(book.writer())
        book.invalid(Record(1, "a", None, "not JSON"), "not JSON")
        with pytest.raises(StoreError, match="locked"):
            await writer
        book.invalid(Record(2, "b", None, "not JSON"), "not JSON")
        await book.finish()
        assert book.writer_failed
        book.flush_last()  # raised once already: nothing more, nothing written out of order
        journal.close()
    finally:
        holder.close()
    assert _keys(db) == []
    assert len(journal_files(journal.path)) >= 1
    assert recover_journal(store) == 2  # the next run's replay writes both
    assert _keys(db) == [("a",), ("b",)]


async def test_once_the_input_is_read_the_book_hands_over_at_once(tmp_path: Path) -> None:
    """Commits come every 5 s (FLUSH_EVERY_S) while records are read; once the input is read
    (`tail`), what is journaled is handed over at once, not when the interval ends, so the
    segment the run's end waits for is a small one."""
    db = tmp_path / "results.duckdb"
    book, journal, store = _book(db, timeout=60)
    book.flush_every = 3600.0  # no timed hand-over within this test
    await book.start_writer()  # the process is up: the writer task goes straight to its wait
    writer = asyncio.ensure_future(book.writer())
    try:
        book.invalid(Record(1, "a", None, "not JSON"), "not JSON")
        for _ in range(3):  # a few loop steps: the writer task now waits on its 3,600 s
            await asyncio.sleep(0)
        book.tail()
        await until(lambda: store.status_counts("t").get("invalid") == 1, "the commit")
    finally:
        await _end(book, writer, journal)
    assert _keys(db) == [("a",)]
    assert not book.writer_failed


async def _end(book: Book, writer: asyncio.Future[None], journal: Journal) -> None:
    """The run's end for a book driven by hand: close, the writer task, `finish`, the journal."""
    book.close()
    await asyncio.gather(writer, return_exceptions=True)
    await book.finish()
    journal.close()


async def test_a_writer_cancelled_as_it_is_woken_stops(tmp_path: Path) -> None:
    """The run's task group cancels the writer task in the loop pass that woke it (a worker's
    row, `tail`): it stops. With `asyncio.wait_for` (Python 3.11) the wake-up won over the
    cancel, the writer went on ticking, and the cancelled run waited for it forever."""
    db = tmp_path / "results.duckdb"
    book, journal, _ = _book(db, timeout=60)
    book.flush_every = 3600.0
    await book.start_writer()
    writer = asyncio.ensure_future(book.writer())
    try:
        for _ in range(3):  # the writer task now waits on its 3,600 s
            await asyncio.sleep(0)
        book.tail()  # wakes it...
        await asyncio.sleep(0)  # (wait_for's inner wait is done in this pass)
        writer.cancel()  # ...and the cancel comes in the same pass
        await asyncio.wait([writer], timeout=5)
        assert writer.cancelled()
    finally:
        await _end(book, writer, journal)
