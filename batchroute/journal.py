"""The write-ahead journal beside a results database: rows a run has but has not flushed.

No SQL here: the store replays a journal (`ResultStore.recover_journal`) under the run lock.
"""

from __future__ import annotations

import asyncio
import os
from contextlib import suppress
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import orjson

from batchroute.types import AttemptOutcome, AttemptRow, ResultRow


def journal_path(db_path: str | Path) -> Path:
    """The write-ahead journal beside `db_path` (rows a run has but has not flushed yet)."""
    p = Path(db_path)
    return p.with_name(p.name + ".journal")


class Journal:
    """Write-ahead journal: every row is appended the moment the runner has it, so a kill -9
    loses only the calls in flight, never the last second of results.

    A write() to a regular file survives the death of the process (it is in the kernel).
    Inside an event loop the rows appended during one loop step go out in one write() at the
    start of the next step (`rotate()` and `close()` write them first): the same guarantee as
    a write() per row, since nothing the process does in between depends on those rows being
    in the file. A failed write is raised by the next `append()`, which stops the run.
    Before each flush `rotate()` moves the rows that flush writes to `<journal>.flushing`;
    `flushed()` deletes it after the commit. Each journal file is thus committed by at most
    one transaction, all or nothing, which `ResultStore.recover_journal` relies on.
    """

    def __init__(self, db_path: str | Path) -> None:
        self.path = journal_path(db_path)
        self.flushing = self.path.with_name(self.path.name + ".flushing")
        self._fd: int | None = None
        self._pending: list[bytes] = []  # rows of this loop step, not yet written
        self._error: OSError | None = None  # a failed deferred write, raised at the next call

    def open(self) -> None:
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def append(self, row: ResultRow | AttemptRow) -> None:
        if self._fd is None:
            return
        line = (b"r" if isinstance(row, ResultRow) else b"a") + orjson.dumps(row, default=str)
        if not self._pending:
            if self._error is not None:
                raise self._error
            try:
                asyncio.get_running_loop().call_soon(self._write_pending)
            except RuntimeError:  # no event loop: write at once
                self._write(line + b"\n")
                return
        self._pending.append(line)

    def _write_pending(self) -> None:
        try:
            self.sync()
        except OSError as exc:
            self._error = exc

    def sync(self) -> None:
        """Write the rows appended but not yet written (one write())."""
        if self._pending and self._fd is not None:
            rows, self._pending = self._pending, []
            rows.append(b"")
            self._write(b"\n".join(rows))

    def _write(self, data: bytes) -> None:
        assert self._fd is not None
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]

    def rotate(self) -> bool:
        """Hand the journal over to the flush about to start; False if an earlier flush
        failed (its rows stay journaled for the next run, and so do these)."""
        self._write_pending()  # the rows the flush takes belong in the file it commits
        if self._fd is None or self.flushing.exists():
            return self._fd is None
        os.close(self._fd)
        self._fd = None
        os.replace(self.path, self.flushing)
        self.open()
        return True

    def flushed(self) -> None:
        """The rotated rows are committed: forget them."""
        self.flushing.unlink(missing_ok=True)

    def close(self) -> None:
        """Close; the journal file goes if nothing in it awaits a flush."""
        if self._fd is not None:
            self._write_pending()
            os.close(self._fd)
            self._fd = None
        with suppress(FileNotFoundError):
            if self.path.stat().st_size == 0:
                self.path.unlink()


_MONEY_FIELDS = ("cost_usd", "reserved_usd", "usage_cost_usd", "upstream_cost_usd")


def read_journal(path: Path) -> tuple[list[ResultRow], list[AttemptRow]]:
    results: list[ResultRow] = []
    attempts: list[AttemptRow] = []
    with path.open("rb") as fh:
        for line in fh:
            try:
                d = orjson.loads(line[1:])
            except orjson.JSONDecodeError:
                continue  # a line cut short by the kill: that call is redone
            for name in _MONEY_FIELDS:
                if d.get(name) is not None:
                    d[name] = Decimal(d[name])
            if line[:1] == b"r":
                if d.get("created_at"):
                    d["created_at"] = datetime.fromisoformat(d["created_at"])
                results.append(ResultRow(**d))
            else:
                d["started_at"] = datetime.fromisoformat(d["started_at"])
                attempts.append(AttemptRow(**d))
    return results, settle_in_flight(attempts)


def settle_in_flight(attempts: list[AttemptRow]) -> list[AttemptRow]:
    """Resolve the `in_flight` rows a run journals before each call.

    One followed by the call's own row (same run, record and attempt number) is dropped; one
    left open means the run died with the call out: it becomes a `killed` attempt booked at
    its reservation (the provider may bill it), so the books never say less than the bill.
    One whose own row was committed before the kill is dropped by the replay, which skips
    attempts the database already has.
    """
    answered = {
        (a.run_id, a.record_key, a.attempt_no)
        for a in attempts
        if a.outcome != AttemptOutcome.IN_FLIGHT
    }
    out: list[AttemptRow] = []
    seen: set[tuple[str, str, int]] = set()
    for a in attempts:
        if a.outcome == AttemptOutcome.IN_FLIGHT:
            key = (a.run_id, a.record_key, a.attempt_no)
            if key in answered or key in seen:  # answered, or carried over after a flush
                continue
            seen.add(key)
            a.outcome = AttemptOutcome.KILLED
        out.append(a)
    return out
