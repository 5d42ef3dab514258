"""The feeder: the input's records, in input order, through the plan's intake (resume filter,
render, classify, route) onto the tiers' bounded queues, and the end-of-input marks.

Split from `runner/run.py` (issue 11, at 400 lines): it owns the start pass's lookup once the
run has taken it, and closes it as soon as the input is read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from batchroute.plan import Admit, Intake, RunPlan, WorkItem
from batchroute.runner.book import Book
from batchroute.runner.lane import Lane
from batchroute.runner.resume import InputScan, Skipped, pending
from batchroute.runner.work import Control
from batchroute.types import Record, RunStatus


class Feeder:
    """One run's feeder over the input's pass `scan`; `stale` counts the changed records."""

    def __init__(
        self,
        plan: RunPlan,
        intake: Intake,
        scan: InputScan,
        *,
        book: Book,
        control: Control,
        lane: Lane | None,
        queues: dict[str, asyncio.Queue[WorkItem | None]],
        workers: Callable[[str], int],
    ) -> None:
        self.plan, self.intake, self.book, self.control = plan, intake, book, control
        self.lane, self.queues, self.workers = lane, queues, workers
        self._scan: InputScan | None = scan
        self.stale = 0

    async def run(self) -> None:
        """Feed every record the pass names; then one end mark per worker."""
        spec, book, intake, progress = self.plan.spec, self.book, self.intake, self.book.progress
        assert progress is not None
        assert self._scan is not None
        # Only the lines the store has no final, unchanged record of; the rest come in bulk.
        records = pending(self._scan, id_field=spec.id_field, salt=self.plan.line_salt)
        for n, rec in enumerate(records, 1):
            if self.control.interrupted or self.control.status is RunStatus.FAILED:
                break
            if intake.full:
                break
            if isinstance(rec, Skipped):
                rec.count(book.counts)
                continue
            book.counts.seen += 1
            item = self._admit(intake, rec)
            if item is not None:
                progress.routed(item.tier)
                if self.control.stopping:
                    book.pending(item)  # budget spent: the rest stays pending for tomorrow
                    await book.room()  # keep memory bounded while the writer catches up
                else:
                    await self.queues[item.tier].put(item)
            if n % 128 == 0:
                if book.progress is not None:
                    book.progress.tick(book.counts)
                await asyncio.sleep(0)  # let workers run while the queues have room
        if not self.control.interrupted:
            progress.all_read()  # every tier's total is known now
        book.tail()  # the segment the run's end waits for: a small one
        for tier, q in self.queues.items():
            for _ in range(self.workers(tier)):
                await q.put(None)
        await asyncio.to_thread(self.close)  # now, not at the run's end (issue 11)

    def close(self) -> None:
        """Close the pass's lookup (its DuckDB: ~20-40 ms) once the input is read; once."""
        scan, self._scan = self._scan, None
        if scan is not None:
            scan.close()

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
