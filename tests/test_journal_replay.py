"""Journal replay row by row, on real DuckDB files and journals written by the real `Journal`;
and the journal's group commit (fdatasync at most every 100 ms, and at rotate and close).

A killed run leaves `<db>.journal.flushing` (the rows of the flush in progress: committed or
not) and `<db>.journal` (rows after it). Replay must apply exactly the rows the database does
not hold yet, whatever the rows look like, and replaying twice must change nothing.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from subprocs import query

from batchroute import journal as journal_mod
from batchroute.errors import StoreError
from batchroute.journal import Journal, journal_path
from batchroute.runner.recover import recover_journal
from batchroute.store import ResultStore
from batchroute.types import AttemptOutcome, AttemptRow, CostFix, RecordStatus, ResultRow

T0 = datetime(2026, 5, 28, 12, 0, 0, tzinfo=UTC)
_tick = iter(range(1, 1_000_000))


def _now() -> datetime:
    """A clock that moves on by a millisecond per call, like a real one."""
    return T0 + timedelta(milliseconds=next(_tick))


def attempt(key: str, no: int, cost: str = "0.001", run: str = "run1") -> AttemptRow:
    return AttemptRow(
        run, "t", key, no, "mid", "m", _now(), 5, 200, AttemptOutcome.OK, cost_usd=Decimal(cost)
    )


def result(
    key: str,
    status: RecordStatus = RecordStatus.DONE,
    *,
    cost: str = "0.001",
    attempts: int = 1,
    line: int = 1,
    run: str = "run1",
) -> ResultRow:
    return ResultRow(
        "t",
        key,
        run,
        line,
        status,
        output="answer" if status is RecordStatus.DONE else None,
        cost_usd=Decimal(cost),
        attempts=attempts,
        created_at=_now(),
    )


def _store(tmp_path: Path) -> tuple[ResultStore, Path]:
    db = tmp_path / "r.duckdb"
    store = ResultStore(db)
    store.migrate()
    return store, db


def _journal(db: Path) -> Journal:
    j = Journal(db)
    j.open()
    return j


def _results(db: Path) -> dict[str, tuple[Any, ...]]:
    rows = query(db, "SELECT record_key, status, cost_usd, attempts, line_no FROM results")
    return {r[0]: r[1:] for r in rows}


def _attempts(db: Path) -> list[tuple[Any, ...]]:
    return query(db, "SELECT run_id, record_key, attempt_no, cost_usd FROM attempts ORDER BY ALL")


def _files(db: Path) -> list[Path]:
    jp = journal_path(db)
    return [p for p in (jp.with_name(jp.name + ".flushing"), jp) if p.exists()]


def _replay_twice(store: ResultStore, db: Path) -> int:
    """Replay, then put the very same journal files back (a replay killed after its commit,
    before it deleted them) and replay again: the second must be a no-op."""
    saved = {p: p.read_bytes() for p in _files(db)}
    assert saved, "nothing to replay"
    n = recover_journal(store)
    assert _files(db) == []
    after = (_results(db), _attempts(db))
    for p, data in saved.items():
        p.write_bytes(data)
    assert recover_journal(store) == 0
    assert (_results(db), _attempts(db)) == after
    assert _files(db) == []
    return n


def test_a_repeated_key_already_committed_does_not_hide_the_rest_of_the_journal(
    tmp_path: Path,
) -> None:
    """The issue's case: an input with id 1 on lines 1 and 5 (a journal of a version that
    dispatched both). Line 1's rows were flushed; line 5's attempt (same run, key, attempt
    number) opens the unflushed journal. Checking only that first row took the whole journal
    for committed: line 5 and record 2 were lost (and paid again)."""
    store, db = _store(tmp_path)
    j = _journal(db)
    rows_1 = [attempt("1", 1), result("1", line=1)]
    for r in rows_1:
        j.append(r)
    assert j.rotate()
    store.write([rows_1[1]], [rows_1[0]])  # type: ignore[list-item]
    j.flushed()
    for r in [attempt("1", 1, "0.002"), result("1", cost="0.002", line=5)]:
        j.append(r)
    for r in [attempt("2", 1, "0.004"), result("2", cost="0.004", line=2)]:
        j.append(r)
    del j  # kill -9

    assert _replay_twice(store, db) == 2
    got = _results(db)
    assert got["1"] == ("done", Decimal("0.003"), 2, 5)  # both lines' calls, as written live
    assert got["2"] == ("done", Decimal("0.004"), 1, 2)
    assert [(k, n, c) for _, k, n, c in _attempts(db)] == [
        ("1", 1, Decimal("0.001")),
        ("1", 1, Decimal("0.002")),
        ("2", 1, Decimal("0.004")),
    ]


def test_a_partly_committed_journal_gets_exactly_its_missing_rows(tmp_path: Path) -> None:
    """One journal file whose first rows a writer committed without rotating (e.g. a flush
    retried after a busy file), the rest not: record a went pending, then done in the same
    run (two result rows, costs to add up), b was committed, c and an `invalid` row were not."""
    store, db = _store(tmp_path)
    j = _journal(db)
    committed: list[Any] = [
        attempt("a", 1, "0.010"),
        result("a", RecordStatus.PENDING, cost="0.010", attempts=1),
        attempt("b", 1, "0.100"),
        result("b", cost="0.100", line=2),
    ]
    for r in committed:
        j.append(r)
    store.write(
        [r for r in committed if isinstance(r, ResultRow)],
        [r for r in committed if isinstance(r, AttemptRow)],
    )
    later: list[Any] = [
        attempt("a", 2, "0.020"),
        result("a", cost="0.020", attempts=1),
        attempt("c", 1, "1.000"),
        result("c", cost="1.000", line=3),
        result("x", RecordStatus.INVALID, cost="0", attempts=0, line=4),
    ]
    for r in later:
        j.append(r)
    del j

    assert _replay_twice(store, db) == 3  # a, c and x
    got = _results(db)
    assert got["a"] == ("done", Decimal("0.030"), 2, 1)
    assert got["b"] == ("done", Decimal("0.100"), 1, 2)
    assert got["c"] == ("done", Decimal("1.000"), 1, 3)
    assert got["x"][0] == "invalid"
    assert [(k, n) for _, k, n, _ in _attempts(db)] == [("a", 1), ("a", 2), ("b", 1), ("c", 1)]


def test_flushing_file_committed_and_journal_not(tmp_path: Path) -> None:
    """The usual kill: the flush in progress committed, the rows after it did not; among them
    a second result row for a key of the committed flush, with no attempt row before it."""
    store, db = _store(tmp_path)
    j = _journal(db)
    first: list[Any] = [attempt("a", 1), result("a", RecordStatus.PENDING), result("z", line=9)]
    for r in first:
        j.append(r)
    assert j.rotate()
    store.write([first[1], first[2]], [first[0]])  # committed; killed before flushed()
    for r in [result("z", RecordStatus.FAILED, cost="0.5", attempts=0, line=9)]:
        j.append(r)
    del j

    assert _replay_twice(store, db) == 1
    got = _results(db)
    assert got["a"] == ("pending", Decimal("0.001"), 1, 1)
    assert got["z"] == ("failed", Decimal("0.501"), 1, 9)
    assert len(_attempts(db)) == 1


def test_flushing_file_not_committed(tmp_path: Path) -> None:
    store, db = _store(tmp_path)
    j = _journal(db)
    for r in [attempt("a", 1), result("a")]:
        j.append(r)
    assert j.rotate()  # killed during the flush: nothing committed
    for r in [attempt("b", 1), result("b")]:
        j.append(r)
    del j
    assert _replay_twice(store, db) == 2
    assert set(_results(db)) == {"a", "b"}
    assert len(_attempts(db)) == 2


def test_rerun_of_a_record_from_an_earlier_run_accumulates_once(tmp_path: Path) -> None:
    store, db = _store(tmp_path)
    old_a, old_r = attempt("k", 1, "0.5", run="run0"), result("k", cost="0.5", run="run0")
    store.write([old_r], [old_a])
    j = _journal(db)
    for r in [attempt("k", 1, "0.25"), result("k", cost="0.25")]:
        j.append(r)
    del j
    assert _replay_twice(store, db) == 1
    assert _results(db)["k"] == ("done", Decimal("0.75"), 2, 1)
    assert [(run, n) for run, _, n, _ in _attempts(db)] == [("run0", 1), ("run1", 1)]


def test_a_cost_fixed_after_the_commit_is_not_mistaken_for_a_new_row(tmp_path: Path) -> None:
    """Reconciliation changes an attempt's cost (and the record's) after its flush: the rows
    still count as committed."""
    store, db = _store(tmp_path)
    j = _journal(db)
    att = attempt("a", 1, "0.9")
    att.cost_source = "reserved"
    att.generation_id = "gen-1"
    res = result("a", cost="0.9")
    j.append(att)
    j.append(res)
    assert j.rotate()
    store.write([res], [att])
    store.apply_fixes(
        [CostFix("run1", "t", "a", 1, Decimal("0.1"), "generation", generation_id="gen-1")]
    )
    del j
    assert _replay_twice(store, db) == 0
    assert _results(db)["a"] == ("done", Decimal("0.1"), 1, 1)
    assert len(_attempts(db)) == 1


def test_replay_is_one_transaction(tmp_path: Path) -> None:
    """A replay that fails part way writes nothing and keeps both files for the next try."""
    store, db = _store(tmp_path)
    j = _journal(db)
    for r in [attempt("a", 1), result("a")]:
        j.append(r)
    assert j.rotate()  # not committed
    bad = result("b")
    bad.status = None  # type: ignore[assignment]  # NOT NULL: the write fails
    j.append(bad)
    del j
    with pytest.raises(StoreError):
        recover_journal(store)
    assert _results(db) == {}
    assert _attempts(db) == []
    assert len(_files(db)) == 2


def test_a_large_journal_replays_quickly(tmp_path: Path) -> None:
    store, db = _store(tmp_path)
    j = _journal(db)
    n = 20_000
    done: list[Any] = []
    for i in range(n):
        rows = [attempt(str(i), 1), result(str(i), line=i + 1)]
        for r in rows:
            j.append(r)
        if i < n // 2:
            done.extend(rows)
    store.write(
        [r for r in done if isinstance(r, ResultRow)],
        [r for r in done if isinstance(r, AttemptRow)],
    )
    del j
    t = time.monotonic()
    assert recover_journal(store) == n // 2
    elapsed = time.monotonic() - t
    assert query(db, "SELECT count(*), sum(attempts) FROM results") == [(n, n)]
    assert query(db, "SELECT count(*) FROM attempts") == [(n,)]
    assert elapsed < 20, elapsed


# ------------------------------------------------------------------ group commit


class _Syncs:
    """Counts the data syncs of journal files (the real fdatasync still runs)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.at: list[tuple[float, int]] = []  # (monotonic time, file size synced)
        self._cv = threading.Condition()
        real = os.fdatasync

        def counting(fd: int) -> None:
            # When the sync starts (the syncer paces starts; how long one takes is the disk's
            # business) and what it covers.
            began, size = time.monotonic(), os.fstat(fd).st_size
            real(fd)
            with self._cv:
                self.at.append((began, size))
                self._cv.notify_all()

        monkeypatch.setattr(journal_mod, "_datasync", counting, raising=False)

    def wait_synced(self, size: int, timeout: float) -> bool:
        """Wait until a sync covered `size` bytes (a deadline, not a sleep)."""
        with self._cv:
            return self._cv.wait_for(lambda: any(s >= size for _, s in self.at), timeout)


async def test_group_commit_syncs_at_most_every_100ms_and_soon_after_the_last_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    syncs = _Syncs(monkeypatch)
    j = _journal(tmp_path / "r.duckdb")
    start = time.monotonic()
    rows = 0
    while time.monotonic() - start < 0.6:  # a row per loop step, as fast as it goes
        j.append(attempt(str(rows), 1))
        rows += 1
        await asyncio.sleep(0)
    await asyncio.sleep(0)  # the last step's write
    size = j.path.stat().st_size
    assert await asyncio.to_thread(syncs.wait_synced, size, 2.0), "last rows never synced"
    assert syncs.at[-1][1] == size  # no further row came: the syncer's timer synced them
    gaps = [b[0] - a[0] for a, b in zip(syncs.at, syncs.at[1:], strict=False)]
    print(f"rows={rows} syncs={len(syncs.at)} min_gap={min(gaps, default=0):.3f}s")
    assert rows > 100 * len(syncs.at)  # grouped: far fewer syncs than writes
    assert 2 <= len(syncs.at) <= 0.6 / 0.1 + 3  # paced: about one per 100 ms at most
    # No two syncs back to back (unpaced, they would be microseconds apart). The bound is
    # loose: a loaded machine can delay a sync's start after the syncer read the clock.
    assert all(g >= 0.05 for g in gaps), gaps
    j.close()


def test_rotate_and_close_sync_what_they_hand_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    syncs = _Syncs(monkeypatch)
    db = tmp_path / "r.duckdb"
    j = _journal(db)
    j.append(attempt("a", 1))
    assert j.rotate()
    flushing = j.flushing.stat().st_size
    j.append(attempt("b", 1))
    j.close()  # waits for the syncs it owes: the rotated file and the journal
    sizes = sorted(s for _, s in syncs.at)
    assert flushing in sizes
    assert j.path.stat().st_size in sizes
    j.flushed()


def test_a_journal_reopened_after_close_still_syncs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    syncs = _Syncs(monkeypatch)
    db = tmp_path / "r.duckdb"
    j = _journal(db)
    j.append(attempt("a", 1))
    j.close()
    n = len(syncs.at)
    assert n >= 1
    j.open()
    j.append(attempt("b", 1))
    j.close()
    assert len(syncs.at) > n


def test_a_call_left_in_flight_is_booked_once(tmp_path: Path) -> None:
    """Rows journaled before a call goes out (`in_flight`, at its reservation): one whose
    answer was committed before the kill adds nothing; one never answered is replayed as a
    `killed` attempt, once, even when carried over from `.flushing` into the journal."""
    store, db = _store(tmp_path)
    answered = attempt("a", 1, "0.002")
    store.write([], [answered])  # its flush committed; its in-flight row outlived it
    j = _journal(db)
    for key in ("a", "b"):
        row = attempt(key, 1, "0.05")
        row.outcome, row.cost_source = AttemptOutcome.IN_FLIGHT, "reserved"
        j.append(row)
    assert j.rotate()  # not committed
    open_b = attempt("b", 1, "0.05")
    open_b.outcome, open_b.cost_source = AttemptOutcome.IN_FLIGHT, "reserved"
    j.append(open_b)  # carried over into the new journal
    del j
    assert _replay_twice(store, db) == 0
    got = query(db, "SELECT record_key, outcome, cost_usd FROM attempts ORDER BY ALL")
    assert got == [("a", "ok", Decimal("0.002")), ("b", "killed", Decimal("0.05"))]
