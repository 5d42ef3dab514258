"""The run's start, under its lock and before its first call: the writer process started, the
store opened (migrations, a killed run's journal replayed, this run's row begun) beside the
input's pass, earlier runs' reservations settled, and what the run starts from read (the job's
final records and today's spend).
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from batchroute.client import OpenRouterClient
from batchroute.plan import Overrides, budget_scope
from batchroute.runner.book import Book
from batchroute.runner.early import StartScan
from batchroute.runner.setup import open_store, reconcile_earlier_runs
from batchroute.spec import JobSpec
from batchroute.store import ResultStore
from batchroute.types import ResumeState


class RunStart:
    """One run's start. `open` before the client exists, `state` once it does; `scan` is the
    input's pass (`StartScan`), begun by `open` and taken by the run."""

    def __init__(
        self,
        store: ResultStore,
        book: Book,
        spec: JobSpec,
        run_id: str,
        overrides: Overrides,
        notes: list[str],
    ) -> None:
        self.store, self.book, self.spec, self.run_id = store, book, spec, run_id
        self.overrides = overrides
        self.notes = notes  # the run's: what the start has to say is appended
        self.scan = StartScan(store, spec, overrides.final_statuses)

    async def open(self, now: datetime) -> None:
        """Start the writer process (its start-up overlaps ours), open the store and begin the
        input's pass beside it. On failure the writer process is ended."""
        await self.book.start_writer()
        try:
            await self.scan.beside(asyncio.to_thread(self._open_store, now), self.book.journal)
        except BaseException:
            await self.book.finish()
            raise

    def _open_store(self, now: datetime) -> None:
        self.notes += open_store(self.store, self.book, self.spec, self.run_id, now)

    async def state(self, client: OpenRouterClient, now: datetime) -> ResumeState:
        """Earlier runs' reservations settled where /generation knows them, then the job's
        final count and today's spend. The day is fixed at the start: a run crossing midnight
        keeps counting against the day it started on (never more than one cap per run)."""
        spec = self.spec
        note = await reconcile_earlier_runs(client, self.store, spec.name)
        if note is not None:
            self.notes.append(note)
        return await asyncio.to_thread(
            self.store.resume_state,
            spec.name,
            final_statuses=self.overrides.final_statuses,
            day=now.date(),
            scope=budget_scope(spec),
        )
