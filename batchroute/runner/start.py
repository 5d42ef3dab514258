"""The run's start, under its lock and before its first call: the writer process started, the
store opened (migrations, a killed run's journal replayed, this run's row begun) beside the
input's pass, earlier runs' reservations settled, and what the run starts from read (the job's
final records and today's spend).

Two starts need not write the file first (docs/design-notes.md, "A run starts while a reader
holds the file"); the writer process makes their start writes (`batchroute.writer.begin`) while
the run sends:

- `fresh`: no database yet and no journal. Nothing can be final and nothing was spent; the run
  leaves an empty file in the database's place (DuckDB refuses to open it, so no one can make a
  database there meanwhile) and the writer renames the new database over it.
- `held`: another process has the file open read-only (an SQL client, `batchroute report`).
  The start reads what it needs read-only beside it, with the journal files a killed run left
  counted as the dry run counts them; the writer replays them, then begins the run's row, once
  the file is free. Earlier runs' reservations stay as booked (an overcount) until a later run.

A file open for writing elsewhere lets no one read it: the run waits for it (saying who holds
it) as before, and gives up with exit 5 (the database is locked), having sent nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Literal

from batchroute._version import __version__
from batchroute.client import OpenRouterClient
from batchroute.errors import FileHeld, LockHeld
from batchroute.journal import Journal, read_journal
from batchroute.plan import Overrides, budget_scope
from batchroute.runner.book import Book
from batchroute.runner.cost import learn_since, learnt_note
from batchroute.runner.early import StartScan
from batchroute.runner.recover import Replayed
from batchroute.runner.setup import open_store, reconcile_earlier_runs
from batchroute.spec import JobSpec
from batchroute.store import SCHEMA_VERSION, ResultStore, unreplayed
from batchroute.store.connect import describe_process, held_by
from batchroute.types import ResumeState

Mode = Literal["normal", "fresh", "held"]


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
        say: Callable[[str], None],
    ) -> None:
        self.store, self.book, self.spec, self.run_id = store, book, spec, run_id
        self.overrides = overrides
        self.notes = notes  # the run's: what the start has to say is appended
        self.say = say
        self.scan = StartScan(store, spec, overrides.final_statuses)
        self.mode: Mode = "normal"
        # Where the start reads: the store, a read-only one beside a reader, nothing (fresh).
        self.reads: ResultStore | None = store
        self.replayed: Replayed | None = None  # a killed run's journal, not written yet
        self.begun: asyncio.Future[None] | None = None  # the writer made the start writes
        self.no_generation = False  # the endpoint is proven to have no GET /generation

    @property
    def fresh(self) -> bool:
        return self.mode == "fresh"

    async def open(self, now: datetime) -> None:
        """Start the writer process (its start-up overlaps ours), open the store or hand its
        start writes to the writer, and begin the input's pass. On failure the writer process
        is ended."""
        self.mode = self._choose()
        if self.fresh:
            self.reads = None
            self.scan.begin_fresh()  # needs nothing from the store: beside the writer's spawn too
        try:
            await self.book.start_writer()
        except BaseException:
            await self.scan.aclose()
            raise
        try:
            if self.mode == "normal":
                opening = asyncio.to_thread(self._open_store, now)
            else:
                opening = self._defer(now)
            await self.scan.beside(opening, fresh=self.fresh)
        except BaseException:
            await self.book.finish()
            raise

    def _choose(self) -> Mode:
        path, journal = self.store.path, self.book.journal
        if any(t.batch for t in self.spec.tiers.values()):
            return "normal"  # the batch lane writes batch rows from the run's own process
        if not journal.files():
            if not path.exists():
                try:
                    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
                    return "fresh"
                except FileExistsError:  # made a moment ago by another process: read it
                    pass
            elif path.stat().st_size == 0:  # the place a start killed early left (our lock)
                return "fresh"
        elif path.exists() and path.stat().st_size == 0:
            path.unlink()  # that, and a journal: replayed into a new file as before
            for new in (".new", ".new.wal"):  # the writer's unfinished first file (disk full)
                path.with_name(path.name + new).unlink(missing_ok=True)
            return "normal"
        holder = held_by(path)
        if holder is None:
            return "normal"
        pid, for_write = holder
        timeout = self.store.write_timeout
        if for_write:
            self.say(
                f"{path} is open for writing in {describe_process(pid)}, which lets no other "
                f"process read it: waiting up to {timeout:g} s for it to be closed"
            )
            return "normal"
        self.say(
            f"note: {path} is open read-only in {describe_process(pid)}: the run starts "
            "without writing to it; results are journaled, and written once it is closed"
        )
        self.reads = self.scan.store = ResultStore(path, read_only=True, read_timeout=timeout)
        return "held"

    def _open_store(self, now: datetime) -> None:
        try:
            self.notes += open_store(self.store, self.book, self.spec, self.run_id, now)
        except FileHeld as exc:
            who = describe_process(exc.pid) if exc.pid is not None else "another process"
            raise LockHeld(
                f"{self.store.path} stayed open in {who} for {self.store.write_timeout:g} s "
                "(output.busy_timeout_s): the run did not start and sent nothing; run it "
                "again once that process has closed the file",
                pid=exc.pid,
            ) from exc

    async def _defer(self, now: datetime) -> None:
        order = await asyncio.to_thread(self._prepare, now)
        if order is not None:
            marker = self.book.journal.path.with_name(self.book.journal.path.name + ".begin")
            # A fresh file's schema is made once the first calls are out (issue 11)
            self.begun = self.book.begin_in_writer(marker, order, hold=self.fresh)
            self.begun.add_done_callback(self._begun)

    def say_waiting(self) -> None:
        """At the run's end, when its results wait for the file: say so, and who holds it."""
        if self.mode == "held" and self.begun is not None and not self.begun.done():
            holder = held_by(self.store.path)
            who = f" (open in {describe_process(holder[0])})" if holder else ""
            self.say(f"waiting for {self.store.path}{who} to write the run's results")

    def _begun(self, done: asyncio.Future[None]) -> None:
        if not done.cancelled() and done.exception() is None and self.mode == "held":
            self.say("note: the database is free again: the run's results are being written")

    def _prepare(self, now: datetime) -> bytes | None:
        """Read what a held start needs read-only, set aside a killed run's journal for the
        writer to replay, open this run's journal; the writer's order (None: opened the
        usual way after all)."""
        journal, replay = self.book.journal, []
        if self.mode == "held":
            assert self.reads is not None
            if self.reads.schema_version() != SCHEMA_VERSION:  # read-only reads need it
                self.say("the database needs its migrations first: waiting for the file")
                self.mode = "normal"
                self._open_store(now)
                return None
            replay = _set_aside(journal)
            if replay:
                rows = unreplayed(
                    self.store.path, *read_journal(*replay), timeout=self.reads.read_timeout
                )
                self.replayed = Replayed(
                    *rows, job_name=self.spec.name, final_statuses=self.overrides.final_statuses
                )
                self.notes.append(
                    f"{len(rows[0])} result(s) a killed run had not written are counted from "
                    "its journal; the writer process writes them once the file is free"
                )
        journal.open()
        order = {
            "marker": str(journal.path.with_name(journal.path.name + ".begin")),
            "fresh": self.fresh,
            "replay": [str(p) for p in replay],
            "run_id": self.run_id,
            "job_name": self.spec.name,
            "job_path": str(self.spec.path or ""),
            "started_at": now.isoformat(),
            "version": __version__,
        }
        return json.dumps(order).encode()

    async def state(self, client: OpenRouterClient, now: datetime) -> ResumeState:
        """Earlier runs' reservations settled where /generation knows them, then the job's
        final count and today's spend. The day is fixed at the start: a run crossing midnight
        keeps counting against the day it started on (never more than one cap per run)."""
        spec = self.spec
        if self.reads is None:  # fresh: nothing final, nothing spent, nothing reserved
            return ResumeState()
        if self.mode == "normal":
            note, self.no_generation = await reconcile_earlier_runs(
                client, self.store, spec.name, now
            )
            if note is not None:
                self.notes.append(note)
        day, scope = now.date(), budget_scope(spec)
        resume = await asyncio.to_thread(
            self.reads.resume_state,
            spec.name,
            final_statuses=self.overrides.final_statuses,
            day=day,
            scope=scope,
            learn_since=learn_since(day),
        )
        if self.replayed is not None:  # as the dry run counts it
            spent = resume.spent + self.replayed.spent(day, scope)
            resume = self.replayed.learnt(learn_since(day), resume)  # and what it teaches
            resume = dataclasses.replace(resume, spent=spent)
        if note := learnt_note(resume):
            self.notes.append(note)
        return resume


def _set_aside(journal: Journal) -> list[Path]:
    """The journal files a killed run left, its journal renamed as the segment after the last
    (so this run's journal starts empty and the replay keeps the order); in replay order."""
    if journal.path.exists():
        last = max((int(p.name.rsplit(".", 1)[1]) for p in _segments(journal)), default=0)
        journal.path.rename(journal.path.with_name(f"{journal.path.name}.{last + 1:06d}"))
    return journal.files()


def _segments(journal: Journal) -> list[Path]:
    return [p for p in journal.files() if p not in (journal.path, journal.flushing)]
