"""The write-ahead journal beside a results database: rows a run has but has not flushed.

No SQL and no store here: `batchroute.runner.recover` reads a killed run's files and hands
the rows to the store. Reading the files back is `journal/read.py`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import threading
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

import orjson

from batchroute.journal.read import (
    MONEY_FIELDS,
    cost_fixes,
    journal_files,
    read_journal,
    read_segment,
    settle_in_flight,
)
from batchroute.lock import real_db_path
from batchroute.types import AttemptRow, CostFix, ResultRow

__all__ = [
    "SYNC_EVERY_S",
    "TIGHT_BYTES",
    "Journal",
    "cost_fixes",
    "encode_row",
    "journal_files",
    "journal_path",
    "read_journal",
    "read_segment",
    "settle_in_flight",
]

SYNC_EVERY_S = 0.1  # group commit: at most one fdatasync per 100 ms, and none idle
# Below this much room on the journal's disk, a call's in-flight mark is written before it
# goes out (`Journal.tight`): a write() per call, which costs the loop ~15-55 us a record.
TIGHT_BYTES = 256 * 2**20

# fdatasync: the data and the size (what reading the rows back needs), not the mtime.
_datasync = getattr(os, "fdatasync", os.fsync)


def journal_path(db_path: str | Path) -> Path:
    """The write-ahead journal beside `db_path` (rows a run has but has not flushed yet),
    beside the real file whatever name it is given (like the run lock)."""
    p = real_db_path(db_path)
    return p.with_name(p.name + ".journal")


# A row is journaled as a dict of its fields: orjson encodes a dict ~3x faster than a slots
# dataclass (1.3 vs 5.0 µs a result row), and money as text, not via `default=str` (~0.9 µs an
# amount). The JSON is the same: field order, decimal text, ISO times, enum values (issue 11).
_ROW_FIELDS: dict[type, tuple[bytes, tuple[str, ...]]] = {
    cls: (tag, tuple(f.name for f in dataclasses.fields(cls)))
    for cls, tag in ((ResultRow, b"r"), (AttemptRow, b"a"), (CostFix, b"f"))
}


def encode_row(row: ResultRow | AttemptRow | CostFix) -> bytes:
    """A row's journal line (without its newline), as `read_segment` and the writer read it."""
    tag, names = _ROW_FIELDS[type(row)]
    fields = {n: getattr(row, n) for n in names}
    for name in MONEY_FIELDS:
        if (value := fields.get(name)) is not None:
            fields[name] = str(value)
    return tag + orjson.dumps(fields, default=str)


class Journal:
    """Write-ahead journal: every row is appended the moment the runner has it, so a kill -9
    loses only the calls in flight, never the last second of results.

    A write() to a regular file survives the death of the process (it is in the kernel).
    Inside an event loop the rows appended during one loop step go out in one write() at the
    start of the next step (`rotate()` and `close()` write them first): the same guarantee as
    a write() per row, as nothing done in between depends on those rows being in the file.
    A failed write is raised by the next `append()`, which stops the run; where the disk is
    short of room (`tight`) each call's in-flight mark is written before the call goes out.
    A run closes the journal as a numbered segment (`rotate_segment()`, `<journal>.000001`, …)
    at least every 5 s; the writer process (`batchroute.writer`) commits each segment and
    deletes it. (`rotate()` to `<journal>.flushing` and `flushed()` are the single-process
    flush of older versions, kept for their files and tests.) `runner.recover_journal`
    replays whatever is left row by row (a row the database holds already is skipped), so a
    file committed whole, in part or not at all is replayed right.

    Group commit, for a power cut or a reboot: a background thread makes the written rows
    durable with fdatasync() at most every `SYNC_EVERY_S` (100 ms) while rows come in, and
    within 100 ms of the last one when they stop (so the run's hot path never waits for the
    disk); `rotate()` hands the old file to that thread, which syncs it before closing it, and
    `close()` syncs what is left and waits for it. The folder is synced too after the journal
    file is created or renamed, so the names survive with the rows. What a power cut or a
    kernel crash can lose is therefore:

    - the calls in flight (paid, never answered to us: as with kill -9), and
    - the rows written in the last ~100 ms before the cut (plus the duration of a sync in
      progress, normally ~1 ms), and a row cut short there (skipped on replay). Their calls
      were paid; the next run calls those records again, and their cost is missing from
      `attempts` (reconciliation with the provider's bill finds it).

    Rows already committed to DuckDB are not at risk (each flush is a DuckDB commit, durable
    on its own). This holds only if the disk honours flushes: a volume whose write cache
    ignores them (some consumer SSDs, VM disks with `cache=unsafe`) can lose more. A sync
    that fails (EIO) is raised by the next `append()`, like a failed write.
    """

    def __init__(self, db_path: str | Path) -> None:
        self.path = journal_path(db_path)
        self.flushing = self.path.with_name(self.path.name + ".flushing")
        self._fd: int | None = None
        self._pending: list[bytes] = []  # rows of this loop step, not yet written
        self.unwritten = b""  # what a failed write left (ENOSPC): written first by the next one
        self._error: OSError | None = None  # a failed deferred write or sync, raised next call
        # Group commit, shared with the syncer thread under _cv:
        self._cv = threading.Condition()
        self._dirty = False  # written to _fd since its last sync began
        self._dir_dirty = False  # the folder changed (file created or renamed) since its sync
        self._retired: list[tuple[int, bool]] = []  # (fd, needs sync) for the syncer to close
        self._stop = False
        self._syncer: threading.Thread | None = None
        self._seq = 0  # the last segment number handed out
        self.tight = True  # (`_room`) a call's mark is written before the call goes out

    def open(self) -> None:
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._dir_dirty = True
        self._room()

    def _room(self) -> None:
        """`tight`: little room left on the journal's disk (or unknown), so a failed write
        (ENOSPC) may come; looked at on open and after each group commit (the syncer)."""
        try:
            st = os.statvfs(self.path.parent)
            self.tight = st.f_bavail * st.f_frsize < TIGHT_BYTES
        except OSError:
            self.tight = True

    def append(self, row: ResultRow | AttemptRow | CostFix) -> None:
        """Journal a row (or a cost fix: tag `f`, applied by the writer process only; a replay
        skips it, since a fix lost to a kill is made again by the next run)."""
        self.append_line(encode_row(row))

    def append_fields(self, tag: bytes, fields: dict[str, Any]) -> bytes:
        """Journal a row given as its fields in order, money as decimal text; its line."""
        try:  # a `default` costs every row ~0.25 µs, and the runner's rows never need it
            line = tag + orjson.dumps(fields)
        except TypeError:  # (orjson.JSONEncodeError) a value orjson has no encoding for
            line = tag + orjson.dumps(fields, default=str)
        self.append_line(line)
        return line

    def append_line(self, line: bytes) -> None:
        """Journal a row already encoded (`encode_row`, `encode_fields`): its tag, its JSON."""
        if self._fd is None:
            return
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
        """Write the rows appended but not yet written (one write()); the syncer thread makes
        them durable within `SYNC_EVERY_S`."""
        if (self._pending or self.unwritten) and self._fd is not None:
            rows, self._pending = self._pending, []
            rows.append(b"")
            self._write(b"\n".join(rows))

    def _write(self, data: bytes) -> None:
        assert self._fd is not None
        view = memoryview(self.unwritten + data)  # a torn line is ended before any new row
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        finally:  # no row of a failed write is dropped: the rest waits for the next one
            self.unwritten = bytes(view)
        if not self._dirty:  # once per sync period: the hot path takes no lock otherwise
            self._mark_dirty()

    # ------------------------------------------------------------ group commit
    def _mark_dirty(self) -> None:
        with self._cv:
            self._dirty = True
            if self._syncer is None:
                self._stop = False
                self._syncer = threading.Thread(
                    target=self._sync_loop, name="batchroute-journal-sync", daemon=True
                )
                self._syncer.start()
            self._cv.notify()

    def _sync_loop(self) -> None:
        """The syncer thread: sync what was written, then rest SYNC_EVERY_S; until stopped."""
        last = -SYNC_EVERY_S
        while True:
            with self._cv:
                while not (self._dirty or self._retired or self._stop):
                    self._cv.wait()
                while not self._stop and (wait := last + SYNC_EVERY_S - time.monotonic()) > 0:
                    self._cv.wait(wait)  # group the rows of the next ~100 ms into one sync
                fd, dirty, self._dirty = self._fd, self._dirty, False
                retired, self._retired = self._retired, []
                folder = self._dir_dirty and (dirty or any(s for _, s in retired))
                if folder:
                    self._dir_dirty = False
                stop = self._stop
            last = time.monotonic()
            self._sync(fd if dirty else None, retired, folder)
            self._room()
            if stop:
                return

    def _sync(self, fd: int | None, retired: list[tuple[int, bool]], folder: bool) -> None:
        """One group commit; the first error is kept for the next `append()` to raise."""
        for old, needs_sync in retired:
            try:
                if needs_sync:
                    _datasync(old)
            except OSError as exc:
                self._error = self._error or exc
            finally:
                os.close(old)
        try:
            if fd is not None:
                _datasync(fd)
            if folder:
                dir_fd = os.open(self.path.parent, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
        except OSError as exc:
            self._error = self._error or exc

    def _retire(self) -> None:
        """Close the journal's fd; its unsynced rows are synced first (by the syncer, off the
        loop). Under the lock: the syncer sees the fd and its dirty flag go together."""
        with self._cv:
            fd, self._fd = self._fd, None
            assert fd is not None
            if self._syncer is not None:  # it may be syncing fd right now: it closes it
                self._retired.append((fd, self._dirty))
                self._dirty = False
                self._cv.notify()
                return
        os.close(fd)  # nothing was ever written through it

    def _stop_syncer(self) -> None:
        """Sync everything written so far, and end the syncer thread."""
        with self._cv:
            syncer, self._stop = self._syncer, True
            self._cv.notify()
        if syncer is not None:
            syncer.join()
        with self._cv:
            self._syncer, self._stop = None, False

    # ---------------------------------------------------------------- lifecycle
    def rotate(self) -> bool:
        """Hand the journal over to the flush about to start; False if an earlier flush
        failed (its rows stay journaled for the next run, and so do these)."""
        self._write_pending()  # the rows the flush takes belong in the file it commits
        if self._fd is None or self.flushing.exists():
            return self._fd is None
        self._retire()
        os.replace(self.path, self.flushing)
        self.open()
        return True

    def rotate_segment(self) -> Path | None:
        """Close the journal as the next numbered segment (`<journal>.000001`, …) for the
        writer process to apply, and start a new journal; None if it is not open."""
        self._write_pending()  # every row journaled so far belongs to this segment
        if self._fd is None or self.unwritten:  # a write failed: its rest belongs here too
            return None
        while True:
            self._seq += 1
            seg = self.path.with_name(f"{self.path.name}.{self._seq:06d}")
            if not seg.exists():  # left by a run whose replay failed: never overwrite it
                break
        self._retire()
        os.replace(self.path, seg)
        self.open()
        return seg

    def files(self) -> list[Path]:
        """Every journal file left beside the database, in the order a replay reads them."""
        return journal_files(self.path)

    def flushed(self) -> None:
        """The rotated rows are committed: forget them."""
        self.flushing.unlink(missing_ok=True)

    def close(self) -> None:
        """Close (after syncing what was written); the journal file goes if nothing in it
        awaits a flush."""
        if self._fd is not None:
            self._write_pending()
            self._stop_syncer()
            fd, self._fd = self._fd, None
            os.close(fd)
        with suppress(FileNotFoundError):
            if self.path.stat().st_size == 0:
                self.path.unlink()
