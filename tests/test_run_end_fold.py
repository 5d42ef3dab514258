"""The run's fixed costs at its start and end, cut (issue 11, the 200 ms figure).

End: the run's last segment goes into the writer process's last transaction with the run's
row and the job's status counts (one attach, commit and checkpoint, not two), unless the run
has polls to drain: then `Book.close` hands it over alone `TAIL_FLUSH_S` later, as before.
Start: a fresh file's start writes (its schema, ~0.1 s of CPU) are held until the run's first
calls are out, or until the first segment or the end, whichever comes first.

Real parts: a real writer process (`batchroute.writer`, exec'd or forked by the book), real
DuckDB files, real journal segments; commits counted by the store's `after_commit` hook.
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest

from batchroute import writer
from batchroute.journal import Journal
from batchroute.runner import book as book_module
from batchroute.runner.book import TAIL_FLUSH_S, Book
from batchroute.runner.work import utcnow
from batchroute.store import ResultStore
from batchroute.types import Record, RunCounts, RunStatus

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def _segment(db: Path, keys: str, *, cut_short: bool = False) -> Path:
    """A closed journal segment holding one invalid result per key (no calls, no money)."""
    j = Journal(db)
    j.open()
    book = Book(ResultStore(db), j, run_id="r1", job_name="t", now=lambda: NOW)
    for i, k in enumerate(keys, start=1):
        book.invalid(Record(i, k, None, "not JSON"), "not JSON")
    seg = j.rotate_segment()
    j.close()
    assert seg is not None
    if cut_short:  # a last line cut short: DuckDB's path refuses it, the row path skips it
        with seg.open("ab") as f:
            f.write(b'r{"job_name": "t", "record_k')
    return seg


def _db(tmp_path: Path) -> Path:
    db = tmp_path / "results.duckdb"
    store = ResultStore(db)
    store.begin_run("r1", "t", "job.yaml", NOW, "test", migrate=True)
    return db


def _serve(db: Path, commands: bytes) -> tuple[list[bytes], int, int]:
    """`writer.serve` in this process on `commands` (a real pipe); its replies, its exit code
    and how many transactions it committed."""
    commits = [0]

    def counted() -> None:
        commits[0] += 1

    store = ResultStore(db, keep_instance=True, after_commit=counted)
    r, w = os.pipe()
    os.write(w, commands)
    os.close(w)
    replies = (Path(db.parent) / "replies").open("w+b")
    with os.fdopen(r, "rb") as source, replies:
        code = writer.serve(store, source, replies)
        replies.seek(0)
        return replies.read().splitlines(), code, commits[0]


def _finish(seg: list[Path]) -> bytes:
    """The run's `finish` order (`runner/sink.end_order`) naming its last segments."""
    counts = {**asdict(RunCounts(seen=3, invalid=3)), "cost_usd": "0"}
    order = {"run_id": "r1", "job_name": "t", "status": "completed", "counts": counts}
    order |= {"finished_at": NOW.isoformat(), "segments": [str(p) for p in seg]}
    return b"finish " + json.dumps(order).encode() + b"\n"


def _rows(db: Path) -> tuple[list[Any], list[Any]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        keys = con.execute("SELECT record_key FROM results ORDER BY 1").fetchall()
        runs = con.execute("SELECT status, records_invalid FROM runs").fetchall()
        return keys, runs
    finally:
        con.close()


def test_the_run_s_last_segment_and_its_end_are_one_transaction(tmp_path: Path) -> None:
    db = _db(tmp_path)
    seg = _segment(db, "abc")
    replies, code, commits = _serve(db, _finish([seg]))
    assert replies == [b"ok " + os.fsencode(seg), b'bye {"invalid": 3}']
    assert (code, commits) == (0, 1)
    assert not seg.exists()
    assert _rows(db) == ([("a",), ("b",), ("c",)], [("completed", 3)])


def test_a_last_segment_duckdb_cannot_read_is_written_by_rows_then_the_end(
    tmp_path: Path,
) -> None:
    """DuckDB's path refuses a line cut short (a run killed mid-write left it): the segment
    goes by the row path, then the end, each its own transaction, answered in order."""
    db = _db(tmp_path)
    seg = _segment(db, "ab", cut_short=True)
    replies, code, commits = _serve(db, _finish([seg]))
    assert replies == [b"ok " + os.fsencode(seg), b'bye {"invalid": 2}']
    assert (code, commits) == (0, 2)
    assert _rows(db)[0] == [("a",), ("b",)]


def test_an_end_that_fails_writes_no_row_and_keeps_the_segment(tmp_path: Path) -> None:
    """The end's transaction fails after the segment's rows are in it (here: a database whose
    `runs` table is gone): none of them is committed, the writer says why and ends, and the
    segment stays for the next run's replay."""
    db = tmp_path / "results.duckdb"
    ResultStore(db).migrate()
    con = duckdb.connect(str(db))
    con.execute("ALTER TABLE runs RENAME TO runs_gone")
    con.close()
    seg = _segment(db, "ab")
    replies, code, commits = _serve(db, _finish([seg]))
    assert code == 1
    assert replies[0].startswith(b"err "), replies
    assert commits == 0
    assert seg.exists()
    con = duckdb.connect(str(db), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM results").fetchone() == (0,)
    finally:
        con.close()


def _begin(tmp_path: Path) -> bytes:
    """A fresh run's `begin` order (`runner/start.py`)."""
    order = {"marker": str(tmp_path / "m.begin"), "fresh": True, "replay": [], "run_id": "r1"}
    order |= {"job_name": "t", "job_path": "", "started_at": NOW.isoformat(), "version": "t"}
    return json.dumps(order).encode()


def _book(db: Path) -> tuple[Book, Journal, ResultStore]:
    store = ResultStore(db, write_timeout=60)
    store.begin_run("r1", "t", "job.yaml", NOW, "test", migrate=True)
    journal = Journal(db)
    journal.open()
    return Book(store, journal, run_id="r1", job_name="t", now=utcnow), journal, store


async def test_a_run_that_finishes_at_once_sends_its_last_rows_with_its_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`close` then `finish_soon` (no polls to drain): no segment is handed over alone; the
    writer's `finish` takes the rows, and the run's row and counts come back with it."""
    # The hand-over timer far off: a loaded machine's stall between `close` and the check
    # must not look like the timer's hand-over (the check is of `close`, not of the clock).
    monkeypatch.setattr(book_module, "TAIL_FLUSH_S", 3600.0)
    db = tmp_path / "results.duckdb"
    book, journal, _ = _book(db)
    await book.start_writer()
    work = asyncio.ensure_future(book.writer())
    try:
        book.invalid(Record(1, "a", None, "not JSON"), "not JSON")
        book.close()
        await work
        assert journal.files() == [journal.path], "close handed a segment over alone"
        book.finish_soon(RunStatus.COMPLETED)
        await book.finish()
    finally:
        journal.close()
    assert book.ended_as(RunStatus.COMPLETED) == {"invalid": 1}
    assert _rows(db) == ([("a",)], [("completed", 1)])


async def test_a_run_with_polls_to_drain_hands_its_rows_over_meanwhile(tmp_path: Path) -> None:
    """`close` with no `finish` after it (the run drains its /generation polls): the rows are
    handed over alone `TAIL_FLUSH_S` later and committed while the run waits."""
    db = tmp_path / "results.duckdb"
    book, journal, store = _book(db)
    await book.start_writer()
    work = asyncio.ensure_future(book.writer())
    try:
        book.invalid(Record(1, "a", None, "not JSON"), "not JSON")
        loop = asyncio.get_running_loop()
        closed = loop.time()
        book.close()
        await work
        deadline = loop.time() + 60
        while store.status_counts("t").get("invalid") != 1:
            assert loop.time() < deadline, "the rows were not committed during the drain"
            await asyncio.sleep(0.01)
        assert loop.time() - closed >= TAIL_FLUSH_S * 0.9  # not before `finish` could come
        book.finish_soon(RunStatus.COMPLETED)
        await book.finish()
    finally:
        journal.close()
    assert book.ended_as(RunStatus.COMPLETED) == {"invalid": 1}


async def test_a_held_begin_goes_before_the_first_segment(tmp_path: Path) -> None:
    """A fresh run's start writes held back (`hold=True`): nothing is begun until the first
    calls are out (`calls_out`) or, here, a segment is handed over first; then the begin is
    answered before that segment, in order."""
    db = tmp_path / "results.duckdb"
    db.touch()  # the fresh run's place holder
    journal = Journal(db)
    journal.open()
    book = Book(ResultStore(db, write_timeout=60), journal, run_id="r1", job_name="t", now=utcnow)
    await book.start_writer()
    begun = book.begin_in_writer(tmp_path / "m.begin", _begin(tmp_path), hold=True)
    try:
        for _ in range(5):
            await asyncio.sleep(0)
        assert not begun.done()
        assert db.stat().st_size == 0
        assert not db.with_name(db.name + ".new").exists()
        book.invalid(Record(1, "a", None, "not JSON"), "not JSON")
        book.close()
        book.finish_soon(RunStatus.COMPLETED)
        await book.finish()
        assert begun.done()
        assert begun.exception() is None
    finally:
        journal.close()
    assert _rows(db) == ([("a",)], [("completed", 1)])


async def test_a_held_begin_goes_once_the_first_calls_are_out(tmp_path: Path) -> None:
    db = tmp_path / "results.duckdb"
    db.touch()
    journal = Journal(db)
    journal.open()
    book = Book(ResultStore(db, write_timeout=60), journal, run_id="r1", job_name="t", now=utcnow)
    await book.start_writer()
    begun = book.begin_in_writer(tmp_path / "m.begin", _begin(tmp_path), hold=True)
    try:
        book.calls_out()
        await asyncio.wait_for(asyncio.shield(begun), 60)
        assert _rows(db) == ([], [("running", 0)])
    finally:
        book.close()
        book.finish_soon(RunStatus.COMPLETED)
        await book.finish()
        journal.close()
