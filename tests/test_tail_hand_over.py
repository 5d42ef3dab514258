"""The run's tail: once the input is read, the timed hand-overs wait for the last calls, but
not for ever (issue 11, stop 25).

After the input's end the book hands the journal over at once, then on its 0.25 s timer only
once no more records are left than calls can be out (each hand-over is a writer transaction of
~35 ms of CPU; only the last one is on the run's end). A tail that stays long (records waiting
on a model's rpm limit, batches) must still reach DuckDB: every 20 ticks (5 s) one goes anyway,
as the 5 s cadence before the tail.

Real parts: a real writer process, a real DuckDB file; the tick shortened (TAIL_FLUSH_S).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from subprocs import until
from test_book_writer import _book, _end, _keys

from batchroute.runner import book as book_module
from batchroute.types import Record


async def test_a_long_tail_still_reaches_the_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(book_module, "TAIL_FLUSH_S", 0.01)  # 20 ticks: 0.2 s
    db = tmp_path / "results.duckdb"
    book, journal, store = _book(db, timeout=60)
    await book.start_writer()
    writer = asyncio.ensure_future(book.writer())
    try:
        book.counts.seen = 100  # admitted, none settled: far more than the 1 call that is out
        book.tail(1)  # hands over at once (nothing yet): the writer task takes the wake-up
        await until(lambda: not book._flush_now.is_set(), "the hand-over at the input's end")
        book.invalid(Record(1, "a", None, "not JSON"), "not JSON")
        await until(lambda: store.status_counts("t").get("invalid") == 1, "the tail's commit")
    finally:
        await _end(book, writer, journal)
    assert _keys(db) == [("a",)]
    assert not book.writer_failed
