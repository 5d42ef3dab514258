"""The run: lock, store, catalogue and budget set-up; worker pools; shutdown (feeder: `feed.py`).

reader → the plan's intake (resume filter, render, classify, route) → per-tier bounded
queues → workers (`Dispatcher`) → `Book` (journal + one writer). Signals stop intake, let calls in
flight finish within the grace period, and still flush everything that finished.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import Awaitable
from decimal import Decimal
from typing import TypeVar

from batchroute.budget import Budget
from batchroute.client import OpenRouterClient
from batchroute.errors import BatchrouteError, SpecError
from batchroute.journal import Journal
from batchroute.lock import RunLock
from batchroute.plan import Overrides, RunPlan, WorkItem, build_plan, daily_cap
from batchroute.runner.book import Book
from batchroute.runner.dispatch import Dispatcher
from batchroute.runner.feed import Feeder
from batchroute.runner.lane import Lane
from batchroute.runner.reconcile import CONCURRENT_GETS, Reconciler
from batchroute.runner.resume import Totals
from batchroute.runner.setup import (
    Early,
    calibrate,
    check_key,
    close_store,
    end_notes,
    end_status,
    fewer_gc_passes,
    input_known,
    load_catalog,
    save_baseline,
    start_progress,
)
from batchroute.runner.start import RunStart
from batchroute.runner.watch import signals_handled, watch_key
from batchroute.runner.work import Control, RunOptions, RunReport, Trail
from batchroute.spec import JobSpec
from batchroute.store import ResultStore
from batchroute.types import RunStatus
from batchroute.usd import usd

T = TypeVar("T")


class Runner:
    """Runs one job once. Use `await Runner(spec, opts).run()` or `run_job`."""

    def __init__(self, spec: JobSpec, opts: RunOptions) -> None:
        self.spec = spec
        self.opts = opts
        self.db_path = opts.db_path or spec.database_path
        self.run_id = uuid.uuid4().hex[:16]
        self.overrides = Overrides(
            opts.budget_usd, opts.retry_failed, opts.rerun_changed, opts.limit
        )
        timeout = spec.output.busy_timeout_s  # one DuckDB instance: ~20 ms less per transaction
        self.store = ResultStore(self.db_path, write_timeout=timeout, keep_instance=True)
        self.notes: list[str] = []
        self.control = Control(self._log)
        self.book = Book(
            self.store, Journal(self.db_path), run_id=self.run_id, job_name=spec.name, now=opts.now
        )
        self.plans: dict[str, tuple[str, ...]] = {}
        self.plan: RunPlan | None = None
        self.feeder: Feeder | None = None  # once the input's pass is taken
        self.start = RunStart(
            self.store, self.book, spec, self.run_id, self.overrides, self.notes, self._log
        )
        self._scan = self.start.scan
        self._announced = 0
        self._workers: list[asyncio.Task[None]] = []
        self._feeding: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._workers_left = 0
        self._work_done = asyncio.Event()
        self._dispatcher: Dispatcher | None = None
        self._lane: Lane | None = None  # the `batch: true` tiers (issue 14)

    def _log(self, line: str) -> None:
        if self.opts.log is not None:
            self.opts.log(line)
        elif self.book.progress is not None:
            self.book.progress.log(line)
        else:  # the start, before the progress display exists
            print(line, file=sys.stderr, flush=True)

    # ------------------------------------------------------------------- run
    async def run(self) -> RunReport:
        start = self.opts.monotonic()
        if not self.spec.input.is_file():
            raise SpecError(
                f"input file not found: {self.spec.input}", path=str(self.spec.path), key="input"
            )
        signals = signals_handled(self.opts.handle_signals, self._on_signal)
        with fewer_gc_passes(), signals, RunLock(self.db_path):
            await self.start.open(self.opts.now())
            try:
                await self._run_pipeline()
            except BatchrouteError as exc:
                self.control.stop(RunStatus.FAILED, exc)
                raise
            finally:
                if self.control.status is RunStatus.RUNNING:
                    self.control.status = RunStatus.FAILED
                if self.feeder is not None:
                    self.feeder.close()  # if the feeder did not get to the end
                await self._scan.aclose()  # a pass not taken (the set-up failed)
                await self.book.finish()  # the writer process commits the rest and ends
                await _to_the_end(asyncio.to_thread(self._close_store))
            statuses = self.book.ended_as(self.control.status)  # the writer's last answer
            if statuses is None:  # (else the run never opens the file again: issue 11)
                statuses = await _to_the_end(
                    asyncio.to_thread(self.store.status_counts, self.spec.name)
                )
        return RunReport(
            self.run_id,
            self.spec.name,
            self.db_path,
            self.control.status,
            self.book.counts,
            self.opts.monotonic() - start,
            self.feeder.stale if self.feeder is not None else 0,
            dict(self.plans),
            self.control.error,
            self.notes,
            statuses,
            self._lane.in_flight if self._lane is not None else 0,
        )

    def _close_store(self) -> None:  # unless the writer process closed the run's row
        if self.book.ended_as(self.control.status) is not None:
            return self.book.journal.close()
        note = close_store(self.store, self.book, self.control, self.run_id, self.opts.now)
        if note is not None:
            self.notes.append(note)
            self._log(f"note: {note}")

    async def _run_pipeline(self) -> None:
        spec, opts = self.spec, self.opts
        async with OpenRouterClient(
            opts.base_url or spec.endpoint.base_url,
            opts.api_key,
            timeout_s=spec.limits.timeout_s,
            title=spec.endpoint.title,
            referer=spec.endpoint.referer,
            # Room beside the `concurrency` calls for the bookkeeping requests (GET /key, the
            # reconciler's /generation polls), so that calls which wait never starve them.
            max_connections=spec.limits.concurrency + CONCURRENT_GETS + 2,
        ) as client:
            early = Early(client)  # GET /models and /key beside the store reads below
            early.after = self.start.begun
            resume = await self.start.state(client, opts.now())
            budget = Budget(daily_cap(spec, self.overrides), resume.spent)
            key_note = await check_key(early, budget)
            cache = self.start.reads
            catalog, live, note = await load_catalog(early, self.store, opts.now, cache=cache)
            if note is not None:
                self.notes.append(note)
            plan = build_plan(spec, catalog, resume, self.overrides, live=live)
            plan = self.plan = await calibrate(plan, self.notes)
            early.save_later(save_baseline, self.store, plan, self.run_id, opts.now())
            lane = self._lane = Lane(plan, opts, client, self.store, self.book, self.control,
                                     self._log, self.notes, budget)  # fmt: skip
            if self.start.fresh:  # no earlier run: no batch left open
                lane.earlier = []
            else:
                await lane.collect_earlier()  # before the lookup: what they answered is final
            # The input's one pass, begun beside the set-up; again if batches were collected
            # (a fresh run's first lines at once, the pass behind them: runner/feed.py)
            passes = await self._scan.take(again=bool(lane.earlier))
            self.queues: dict[str, asyncio.Queue[WorkItem | None]] = {
                t: asyncio.Queue(spec.limits.queue_size) for t in plan.tiers
            }
            self.feeder = Feeder(
                plan,
                passes,
                replayed=self.start.replayed,  # a killed run's journal the writer replays later
                book=self.book,
                control=self.control,
                lane=lane,
                queues=self.queues,
                workers=self._worker_count,
                known=lambda totals: self._announce(resume.spent, plan.cap, key_note, totals),
            )
            plans = dict(plan.tiers)
            self.notes += plan.warnings
            self.plans = {t: p.models for t, p in plans.items()}
            self.book.progress = start_progress(
                plans, opts, self.overrides, lambda: self.book.counts
            )
            dispatcher = self._dispatcher = Dispatcher(
                spec,
                opts,
                plan=plan,
                client=client,
                budget=budget,
                control=self.control,
                book=self.book,
                log=self._log,
            )
            lane.dispatch = dispatcher.process
            reconciler = dispatcher.reconciler = Reconciler(
                client, budget, self.book, sleep=opts.sleep, on_change=dispatcher.wake,
                absent=self.start.no_generation,
            )  # fmt: skip
            if self.feeder.totals is not None:  # else once the pass is made
                self._announce(resume.spent, plan.cap, key_note, self.feeder.totals)
            wait = 0.0  # cut short (an error, a cancellation): stop the polls at once
            pumped = settled = False
            lines: list[str] = []
            try:
                await self._pump(client, budget)
                wait = 0.0 if self.control.interrupted else spec.limits.reconcile_wait_s
                pumped = True
            finally:
                # Before the session closes: a poll left running would GET /generation on a
                # closed session. What is not settled stays at its reservation; the next run
                # asks again.
                try:
                    await reconciler.drain(wait)
                    self.start.say_waiting()
                    self.notes += filter(None, [await early.saved()])
                    settled = pumped
                finally:
                    self.book.progress.close()
                    if settled and self.control.status is RunStatus.RUNNING:
                        short, deferred = dispatcher.budget_short, dispatcher.deferred
                        self.control.status, lines = end_status(short, deferred, budget)
                    # The last commit beside the session's close, and the run's row (issue 11)
                    self.book.finish_soon(self.control.status if settled else None)
        self.notes += end_notes(reconciler, budget, self.book)
        for note in self.notes[self._announced :]:
            self._log(f"note: {note}")
        for line in lines:
            self._log(line)

    def _announce(self, spent: Decimal, cap: Decimal, key_note: str, totals: Totals) -> None:
        if self.book.progress is not None:
            input_known(self.book.progress, self.overrides, totals)
        final = self.plan.resume.final_count if self.plan is not None else 0
        for note in self.notes:
            self._log(f"note: {note}")
        self._announced = len(self.notes)
        for name, models in self.plans.items():
            if self.spec.tiers[name].cheapest:  # chosen at run start: say which (issue 4)
                self._log(f"tier {name}: cheapest by catalogue price: {', '.join(models)}")
        intro = self.book.progress.intro if self.book.progress is not None else ""
        self._log(
            f"run {self.run_id}: job {self.spec.name}, {final} records already "
            f"final, today's spend {usd(spent)} of {usd(cap)}{key_note}{intro}"
        )

    async def _pump(self, client: OpenRouterClient, budget: Budget) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                # The writer is one of the run's tasks: if it fails (a file held past
                # output.busy_timeout_s, a full disk), everything stops at once, cleanly.
                tg.create_task(self.book.writer())
                tg.create_task(self._close_book_when_done())
                for tier in self.plans:
                    n = self._worker_count(tier)
                    self._workers_left += n
                    self._workers += [tg.create_task(self._worker(tier)) for _ in range(n)]
                assert self.feeder is not None
                self._feeding = tg.create_task(self.feeder.run())
                every = self.spec.limits.key_check_s
                watch = watch_key(client, budget, self._work_done, every, self._log)
                self._watcher = tg.create_task(watch)
                if self.book.progress is not None:  # a line a minute without a TTY, always
                    progress = self.book.progress
                    tg.create_task(progress.keep_alive(lambda: self.book.counts, self._work_done))
        except ExceptionGroup as group:
            first: BaseException = group
            while isinstance(first, ExceptionGroup):
                first = first.exceptions[0]
            raise first from group  # one clear error for the CLI, not a task-group traceback
        finally:
            self.book.close()

    async def _close_book_when_done(self) -> None:
        """Let the writer finish with one last flush once every worker is done."""
        await self._work_done.wait()
        self.book.close()

    def _worker_count(self, tier: str) -> int:
        if self.spec.tiers[tier].batch:
            return 1  # one lane worker gathers the tier's records into batches
        lim = self.spec.limits.concurrency
        return min(self.spec.tiers[tier].concurrency or lim, lim)

    # ---------------------------------------------------------- signals
    def _on_signal(self) -> None:
        if self.control.interrupted:
            self._cancel_in_flight()
            return
        self.control.interrupted = True
        self.control.stop(RunStatus.INTERRUPTED)
        if self._dispatcher is not None:
            self._dispatcher.wake()
        grace = self.spec.limits.grace_s
        self._log(
            f"interrupted: finishing calls in flight (up to {grace:g} s); "
            "interrupt again to stop at once"
        )
        asyncio.get_running_loop().call_later(grace, self._cancel_in_flight)

    def _cancel_in_flight(self) -> None:
        for task in (*self._workers, self._feeding, self._watcher):
            if task is not None and not task.done():
                task.cancel()

    # ----------------------------------------------------------- workers
    async def _worker(self, tier: str) -> None:
        try:
            lane = self._lane if self.spec.tiers[tier].batch else None
            await (lane.worker(tier, self.queues[tier]) if lane else self._work(tier))
        finally:
            self._workers_left -= 1
            if self._workers_left == 0:
                self._work_done.set()

    async def _work(self, tier: str) -> None:
        q, dispatcher = self.queues[tier], self._dispatcher
        assert dispatcher is not None
        while True:
            item = await q.get()
            if item is None:
                return
            if self.control.stopping:
                self.book.pending(item)
                continue
            await self.book.room()  # the writer is behind (a reader holds the file): wait
            trail = Trail()
            try:
                await dispatcher.process(item, trail)
            except asyncio.CancelledError:
                self.book.pending(item, trail)  # keeps what this run already paid for it
                raise


async def _to_the_end(work: Awaitable[T]) -> T:
    """Await `work` (a thread's: it cannot be stopped) to its end even if cancelled meanwhile,
    then re-raise the cancel: a cancelled run returns only once no thread of it holds the
    file (the store's write attaches it in this process: a reader then could not open it)."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        raise


async def run_job_async(spec: JobSpec, opts: RunOptions) -> RunReport:
    """Run (or resume) a job to the end, the budget, or an interrupt."""
    return await Runner(spec, opts).run()


def run_job(spec: JobSpec, opts: RunOptions) -> RunReport:
    """Synchronous entry point used by the CLI."""
    return asyncio.run(run_job_async(spec, opts))
