"""The one writer when its run is cancelled mid-flush: the thread writing DuckDB goes on
regardless, so the writer waits for it before the store is closed behind it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import duckdb

from batchroute.journal import Journal
from batchroute.runner.book import Book
from batchroute.runner.work import utcnow
from batchroute.store import ResultStore
from batchroute.types import Record


async def test_a_cancelled_writer_still_commits_the_flush_it_started(tmp_path: Path) -> None:
    db = tmp_path / "results.duckdb"
    store = ResultStore(db, write_timeout=60)
    store.migrate()
    journal = Journal(db)
    journal.open()
    book = Book(store, journal, run_id="r1", job_name="t", now=utcnow)
    holder = duckdb.connect(str(db))  # a reader holds the file: the flush waits and retries
    try:
        writer = asyncio.ensure_future(book.writer())
        book.invalid(Record(1, "a", None, "not JSON"), "not JSON")
        deadline = asyncio.get_running_loop().time() + 30
        while not journal.flushing.exists():  # the timed flush has taken the row and started
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.01)
        writer.cancel()
        holder.close()  # the write in its thread can now go through
        await asyncio.gather(writer, return_exceptions=True)
        # The cancelled writer returned only once its flush was committed and forgotten.
        assert not journal.flushing.exists()
    finally:
        holder.close()
    book.invalid(Record(2, "b", None, "not JSON"), "not JSON")
    book.flush_last()  # what the run's close does: the rest goes in too, not to the journal
    journal.close()
    con = duckdb.connect(str(db), read_only=True)
    keys = con.execute("SELECT record_key FROM results ORDER BY 1").fetchall()
    con.close()
    assert keys == [("a",), ("b",)]
