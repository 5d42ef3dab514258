"""The feeder: the input's records, in input order, through the plan's intake (resume filter,
render, classify, route) onto the tiers' bounded queues, and the end-of-input marks.

Split from `runner/run.py` (issue 11, at 400 lines): it owns the start pass's lookup once the
run has taken it, and closes it as soon as the input is read. On a job's first run it feeds the
input's first lines (`Head`) while the whole pass is still being made, and goes on from the
pass's answers, where it is, once the pass is made (`runner/early.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable, Iterator

from batchroute.plan import Admit, Intake, RunPlan, WorkItem
from batchroute.runner.book import Book
from batchroute.runner.early import Passes, StartScan
from batchroute.runner.lane import Lane
from batchroute.runner.recover import Replayed
from batchroute.runner.resume import Head, InputScan, Skipped, Totals, pending
from batchroute.runner.work import Control
from batchroute.types import KeyLookup, Known, Record, RunStatus

AHEAD = 128  # records queued beyond the workers' before the ramp's feed yields per record


class _Chained:
    """The intake's `KeyLookup`: the head's answers, then the whole pass's from where the feed
    switched (each keeps its own place)."""

    def __init__(self, first: KeyLookup) -> None:
        self.now = first

    def next(self, key: str) -> Known:
        return self.now.next(key)


class Feeder:
    """One run's feeder over the input's `passes`; `stale` counts the changed records.
    `totals` are the input's (the run's start line and its progress total); when they are not
    known yet (a fresh run's head), `known` is told them once the whole pass is made, before
    the feed ends."""

    def __init__(
        self,
        plan: RunPlan,
        passes: Passes,
        *,
        replayed: Replayed | None,
        book: Book,
        control: Control,
        lane: Lane | None,
        queues: dict[str, asyncio.Queue[WorkItem | None]],
        workers: Callable[[str], int],
        known: Callable[[Totals], None],
    ) -> None:
        self.plan, self.book, self.control = plan, book, control
        self.lane, self.queues, self.workers, self.known = lane, queues, workers, known
        first = passes.first
        self.lookup = _Chained(first if isinstance(first, Head) else first.lookup)
        self.intake = plan.intake(replayed.lookup(self.lookup) if replayed else self.lookup)
        self._first: InputScan | Head | None = first
        self._rest: StartScan | None = passes.rest
        self._scan: InputScan | None = None  # the whole pass, once taken from `rest`
        # Known now, unless `first` is a head of a longer input (then `known` is told later).
        self.totals: Totals | None = None
        if passes.rest is None:
            self.totals = first if isinstance(first, Head) else first.lookup
        self.stale = 0
        self._out = False  # the first calls are out (`_calls_out`)
        self._ramp = sum(workers(t) + q.maxsize for t, q in queues.items())

    def _records(self, start: int) -> Iterator[Record | Skipped]:
        spec, salt = self.plan.spec, self.plan.line_salt
        if self._scan is not None:  # only the lines the store has no final, unchanged record of
            return pending(self._scan, id_field=spec.id_field, salt=salt, start=start)
        first = self._first
        if isinstance(first, Head):
            return first.feed(id_field=spec.id_field, salt=salt)
        assert first is not None
        self._scan, self._first = first, None
        return pending(first, id_field=spec.id_field, salt=salt)

    async def _switch(self, rest: StartScan, start: int) -> Iterator[Record | Skipped]:
        """The whole pass, from line position `start` on (the head fed the lines before)."""
        self._rest = None
        scan = self._scan = await rest.rest()
        self.lookup.now = scan.lookup
        head, self._first = self._first, None
        if head is not None:
            head.close()
        self.totals = scan.lookup
        self.known(scan.lookup)
        return self._records(start)

    async def _stream(self) -> AsyncGenerator[Record | Skipped]:
        """The records and skipped runs to feed, in input order: from the head while the
        pass is being made (or until the head is fed: then it waits for it), then from it."""
        head_lines = self._first.lines if isinstance(self._first, Head) else 0
        records = self._records(0)
        at = 0  # the line position after the last record fed
        while True:
            if self._rest is not None and self._rest.ready():
                records = await self._switch(self._rest, at)  # the pass is made: go on from it
            rec = next(records, None)
            if rec is None:
                if self._rest is None:
                    return
                records = await self._switch(self._rest, head_lines)
                continue
            if isinstance(rec, Record):
                at = rec.line_no
            yield rec  # the feed has admitted it when this goes on

    async def run(self) -> None:
        """Feed every record the passes name; then one end mark per worker."""
        book, intake, progress = self.book, self.intake, self.book.progress
        assert progress is not None
        async with contextlib.aclosing(self._stream()) as stream:
            n = 0
            async for rec in stream:
                n += 1
                if self.control.interrupted or self.control.status is RunStatus.FAILED:
                    break
                if intake.full:
                    break
                if isinstance(rec, Skipped):
                    rec.count(book.counts)
                    continue
                await self._put(rec)
                if n % 128 == 0:
                    progress.tick(book.counts)
                    await asyncio.sleep(0)  # let workers run while the queues have room
        stopped = self.control.interrupted or self.control.status is RunStatus.FAILED
        if self._rest is not None and not stopped:  # --limit within the head: the start line
            await self._switch(self._rest, 0)  # still says what the input holds
        if not self.control.interrupted:
            progress.all_read()  # every tier's total is known now
        if not self._out:
            self._calls_out()
        book.tail()  # the run's last segment: a small one
        for tier, q in self.queues.items():
            for _ in range(self.workers(tier)):
                await q.put(None)
        await asyncio.to_thread(self.close)  # now, not at the run's end (issue 11)

    async def _put(self, rec: Record) -> None:
        book, progress = self.book, self.book.progress
        assert progress is not None
        book.counts.seen += 1
        item = self._admit(self.intake, rec)
        if item is not None:
            progress.routed(item.tier)
            if self.control.stopping:
                book.pending(item)  # budget spent: the rest stays pending for tomorrow
                await book.room()  # keep memory bounded while the writer catches up
            else:
                queue = self.queues[item.tier]
                if not self._out and (queue.full() or book.counts.seen > self._ramp):
                    self._calls_out()
                await queue.put(item)
                if not self._out and queue.qsize() >= AHEAD:
                    # Every worker has a record: until the first calls are out, each of
                    # their steps goes before the next record (rendering ~1,000 records
                    # ahead took ~70 ms of the ramp to 256 calls at 200 ms: issue 11)
                    await asyncio.sleep(0)

    def _calls_out(self) -> None:
        """The first calls are out (a queue is full, or as many records as every worker and
        queue hold were fed, or the input is read): the pass behind the head and a fresh
        file's schema (`Book.calls_out`) may be made now, not beside them (issue 11)."""
        self._out = True
        self.book.calls_out()
        if self._rest is not None:
            self._rest.go_on()

    def close(self) -> None:
        """Close the pass's lookup (its DuckDB: ~20-40 ms) once the input is read; once."""
        scan, self._scan = self._scan, None
        first, self._first = self._first, None
        for done in (scan, first):
            if done is not None:
                done.close()

    def _admit(self, intake: Intake, rec: Record) -> WorkItem | None:
        """The plan's resume decision, counted; the work item when the record is sent."""
        a = intake.admit(rec)
        counts = self.book.counts
        counts.earlier_failed += a.failed_before  # exit 4 speaks of failures still in the input
        self.stale += a.stale
        if a.admit is Admit.DUPLICATE:
            counts.duplicates += 1
        elif a.admit is Admit.FINAL:
            counts.skipped += 1
        elif a.admit is Admit.INVALID:
            self.book.invalid(rec, a.reason)
        lane = self.lane
        return None if lane and lane.held and lane.holds(a.item) else a.item
