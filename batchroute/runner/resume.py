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

from batchroute.reader import LineIndex, LineReader, key_of, parse_line, scan_line_fps
from batchroute.store import ResultStore
from batchroute.store.resume import BLANK, FAILED_BEFORE, RECORD, REPEAT, ResumeLookup
from batchroute.types import Record, RecordStatus, RunCounts


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


def pending(scan: InputScan, *, id_field: str | None, salt: bytes) -> Iterator[Record | Skipped]:
    """The feed's pass, in input order: a `Record` for each line the answers name (its
    verdict from `scan.lookup.next`), and a `Skipped` for the lines between them."""
    reader = LineReader(scan.path, scan.index)
    last = -1
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
