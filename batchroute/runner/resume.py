"""Resume's skip path (issue 11): which input lines a run must read, and the rest in bulk.

`open_lookup` makes the start's pass over the input: every line hashed by C code
(`reader.scan_line_fps`), the store's joins (`store/resume.py`), and the keys of only the lines
that are not final and unchanged. `pending` is the feed's pass: it reads and parses only the
lines the answers name, and hands out the lines skipped between them as one `Skipped` count,
so a final, unchanged line costs no Python at all after the hash.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from batchroute.errors import InputError, StoreError
from batchroute.reader import LineIndex, LineReader, key_of, line_raw, parse_line, scan_line_fps
from batchroute.store import ResultStore
from batchroute.store.resume import BLANK, FAILED_BEFORE, RECORD, REPEAT, ResumeLookup
from batchroute.types import NOT_KNOWN, Known, Record, RecordStatus, RunCounts

_DUPLICATE = Known(duplicate=True)


@dataclass(slots=True)
class Skipped:
    """A run of input records the store already has, not read again: `final` ones skipped
    (`failed` of them failed or invalid before) and `repeats` (a key seen earlier)."""

    final: int = 0
    failed: int = 0
    repeats: int = 0

    def count(self, counts: RunCounts) -> None:
        """Add them to the run's counters, as the intake's verdict on each would."""
        counts.seen += self.final + self.repeats
        counts.skipped += self.final
        counts.duplicates += self.repeats
        counts.earlier_failed += self.failed


class Totals(Protocol):
    """What the input holds, from its whole pass (or a head that is the whole input)."""

    @property
    def records(self) -> int: ...

    @property
    def final(self) -> int: ...

    @property
    def duplicates(self) -> int: ...


class InputScan:
    """The start's pass over one input: its lookup and where its lines are. Close it."""

    def __init__(self, path: Path, lookup: ResumeLookup, index: LineIndex) -> None:
        self.path = path
        self.lookup = lookup
        self.index = index

    def close(self) -> None:
        self.lookup.close()


def open_lookup(
    store: ResultStore,
    job_name: str,
    path: Path,
    *,
    id_field: str | None,
    salt: bytes,
    final_statuses: frozenset[RecordStatus],
    history: bool = True,
) -> InputScan:
    """Hash every line of `path` under `salt`, join with the job's results, read the keys of
    the lines that did not match; the `InputScan` whose lookup answers for the feed's pass.
    Not `history`: the store has no file yet (nothing final), and is not opened."""
    index = LineIndex()
    reader: LineReader | None = None

    def keys_at(positions: Iterator[int]) -> Iterator[tuple[int, str | None]]:
        nonlocal reader
        reader = LineReader(path, index)
        for p in positions:
            yield p, key_of(reader.at(p), id_field)

    # A new job, or a history written before line_fp: no line can match, none is hashed.
    match = history and store.has_line_fps(job_name, final_statuses=final_statuses)
    try:
        lookup = store.resume_lookup(
            job_name,
            scan_line_fps(path, salt if match else None, index),
            keys_at,
            final_statuses=final_statuses,
            source=str(path),
            match=match,
            history=history,
        )
    finally:
        if reader is not None:
            reader.close()
    return InputScan(path, lookup, index)


def pending(
    scan: InputScan, *, id_field: str | None, salt: bytes, start: int = 0
) -> Iterator[Record | Skipped]:
    """The feed's pass, in input order from line position `start` (the lines before it were
    fed from a `Head`): a `Record` for each line the answers name (its verdict from
    `scan.lookup.next`), and a `Skipped` for the lines between them."""
    reader = LineReader(scan.path, scan.index)
    last = start - 1
    run = Skipped()
    try:
        for pos, kind in scan.lookup.answers():
            if pos <= last:
                continue  # two final rows share its fingerprint (by chance): one counts
            run.final += pos - last - 1
            last = pos
            if kind == RECORD:
                if run.final or run.repeats:
                    yield run
                    run = Skipped()
                yield parse_line(reader.at(pos), pos, id_field, salt)
            elif kind == REPEAT:
                run.repeats += 1
            elif kind == FAILED_BEFORE:
                run.final += 1
                run.failed += 1
            else:
                assert kind == BLANK
        run.final += scan.lookup.lines - last - 1
        if run.final or run.repeats:
            yield run
    finally:
        reader.close()


class Head:
    """The first `limit` lines of a fresh run's input (no database, no journal: nothing can be
    final), decided in memory so that the first calls need not wait for the whole pass
    (issue 11). Its verdicts are the pass's for those lines (`store/resume.py` with
    `history=False`): a blank line is skipped, a key seen on an earlier line is a duplicate,
    every other line is sent. A line's verdict depends only on the lines before it, so the feed
    may go on from any position with the whole pass's answers (`pending(start=...)`).

    It is the `KeyLookup` of its own records (`next`), and holds at most `limit` lines."""

    def __init__(self, path: Path, *, id_field: str | None, limit: int) -> None:
        self.path = path
        self._lines: list[tuple[bytes, str | None, bool]] = []  # (raw, key, duplicate)
        seen: set[str] = set()
        try:
            fh = path.open("rb")
        except OSError as exc:
            raise InputError(f"cannot open input: {exc.strerror}", path=str(path)) from exc
        with fh:
            for pos in range(limit):
                line = fh.readline()
                if not line:
                    break
                raw = line_raw(line, pos)
                key = key_of(raw, id_field)
                self._lines.append((raw, key, key in seen))
                if key is not None:
                    seen.add(key)
            self.complete = not fh.read(1)  # the whole input: no other pass is needed
        self.lines = len(self._lines)  # blank ones too
        self.records = self.lines - sum(k is None for _, k, _ in self._lines)
        self.duplicates = sum(dup for _, _, dup in self._lines)
        self.final = 0
        self._row: tuple[int, str] | None = None

    def feed(self, *, id_field: str | None, salt: bytes) -> Iterator[Record]:
        """Its records in input order (blank lines left out); ask `next` once for each."""
        for pos, (raw, key, _) in enumerate(self._lines):
            if key is not None:
                self._row = (pos, key)
                yield parse_line(raw, pos, id_field, salt)
        self._row = None

    def next(self, key: str) -> Known:
        """What is known of the record `feed` handed out last, whose key is `key`."""
        row = self._row
        if row is None:
            raise StoreError(f"the input's first lines ({self.path}) asked out of order")
        pos, k = row
        self._row = None
        if k != key:  # pragma: no cover - the same bytes give the same key
            raise InputError(f"line {pos + 1}: key {k!r} read as {key!r}", path=str(self.path))
        return _DUPLICATE if self._lines[pos][2] else NOT_KNOWN

    def close(self) -> None:
        """Let go of its lines (the feed went on from the whole pass's answers)."""
        self._lines = []
