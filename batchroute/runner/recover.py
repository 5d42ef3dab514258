"""Replay of a killed run's journal into the store, under the run lock, before resume; and
the same read without writing, for the dry run (`journaled`, `Replayed`).

The runner side of the write-ahead journal: it reads the files (`batchroute.journal`) and hands
the rows to the store (`ResultStore.replay`); neither of those two imports the other.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from datetime import UTC, date, datetime
from decimal import Decimal

from batchroute.journal import Journal, read_journal
from batchroute.store import ResultStore, unreplayed
from batchroute.store.ratios import learnt_from
from batchroute.types import (
    NOT_KNOWN,
    AttemptRow,
    KeyLookup,
    Known,
    RecordStatus,
    ResultRow,
    ResumeState,
)
from batchroute.usd import ceil_usd


def recover_journal(store: ResultStore) -> int:
    """Commit what a killed run journaled but never flushed; returns how many records.

    Call under the run lock, before reading resume state. Every file (`.flushing`, the
    segments the writer process had not applied, then the journal) is replayed in one
    transaction, row by row (`ResultStore.replay` skips the rows
    the database holds already), so a file a flush committed just before the kill, one
    committed in part, and a replay killed before it deleted the files all come out right,
    and replaying twice changes nothing. The files go after the commit; if the replay fails,
    nothing is written and they stay for the next try.
    """
    journal = Journal(store.path)
    paths = journal.files()
    results, attempts = read_journal(*paths)
    recovered = store.replay(results, attempts)
    for path in paths:
        path.unlink(missing_ok=True)
    return recovered


def journaled(store: ResultStore) -> tuple[list[ResultRow], list[AttemptRow]]:
    """What `recover_journal` would write now, read without writing anything: the rows of the
    journal files a killed run left that the database does not hold yet (the dry run)."""
    paths = Journal(store.path).files()
    if not paths:
        return [], []
    return unreplayed(store.path, *read_journal(*paths), timeout=store.read_timeout)


class Replayed:
    """A killed run's journal as the next run's start will have replayed it, over what the
    store says: which of the job's records it makes final, and what it adds to today's spend.
    For the dry run, which writes nothing: the run replays first, then looks records up."""

    def __init__(
        self,
        results: list[ResultRow],
        attempts: list[AttemptRow],
        *,
        job_name: str,
        final_statuses: Collection[RecordStatus],
    ) -> None:
        # `results` come combined per key (`unreplayed`): each is the row the replay leaves.
        self._rows = {r.record_key: r for r in results if r.job_name == job_name}
        self._final = frozenset(final_statuses)
        self._attempts = attempts

    def spent(self, day: date, scope: str | None) -> Decimal:
        """What the replayed attempts add to that UTC day's spend in `scope` (a job name, or
        None: the whole database), as the store sums them (`reports.spent`)."""
        return sum(
            (
                ceil_usd(a.cost_usd)
                for a in self._attempts
                if _utc_day(a.started_at) == day and scope in (None, a.job_name)
            ),
            Decimal(0),
        )

    def learnt(self, since: date, seed: ResumeState) -> ResumeState:
        """`seed` with the ratios and floors the replayed attempts teach added (the largest
        wins), as the store will read them once they are written (`store.ratios`): a start
        beside a reader that cannot replay them yet still reserves at them (gaps5)."""
        ratios, floors = learnt_from(self._attempts, since, (dict(seed.ratios), dict(seed.floors)))
        return dataclasses.replace(seed, ratios=ratios, floors=floors)

    def lookup(self, store: KeyLookup) -> KeyLookup:
        """`store`'s answers, with the journal's last row of each key in their place."""
        return _Overlay(store, self._rows, self._final) if self._rows else store


class _Overlay:
    def __init__(
        self, store: KeyLookup, rows: dict[str, ResultRow], final: frozenset[RecordStatus]
    ) -> None:
        self._store, self._rows, self._final = store, rows, final

    def next(self, key: str) -> Known:
        known = self._store.next(key)  # asked for every key: it keeps its own place
        row = self._rows.get(key)
        if known.duplicate or row is None:
            return known
        if row.status not in self._final:
            return NOT_KNOWN
        failed = row.status in (RecordStatus.FAILED, RecordStatus.INVALID)
        return Known(final=True, fp=row.request_fp, failed_before=failed, line_fp=row.line_fp)


def _utc_day(at: datetime) -> date:
    return (at.astimezone(UTC) if at.tzinfo is not None else at).date()
