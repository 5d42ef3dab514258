"""The batch lane (issue 14): a `batch: true` tier's records go to OpenRouter's Batch API.

At the start of a run, `collect_earlier` settles the job's batches left open by earlier runs
(before the resume lookup, so what they answered counts as final). A batch tier's queue is
drained by one `worker`: records still in an open batch are skipped, records whose batch item
failed (or that cannot be batched) go through the tier's synchronous chain, the rest are
submitted, each batch's worst case reserved first. With `--wait` the run then polls until every
batch is collected; without, it ends and the CLI exits 7.

Durability: a `batches` row is written as an `intent` before each POST and updated with the
batch id before the run moves on. An intent found by a later run is looked up in `GET /batches`
(same model and request count, created after the intent, not claimed yet, and, once finished,
result lines with our custom_ids) and adopted; not found once `ADOPT_AFTER_S` has passed, it is
abandoned and its records go round again.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import orjson

from batchroute.budget import Budget, Reservation
from batchroute.client import OpenRouterClient
from batchroute.client.batches import create_batch
from batchroute.errors import FatalUpstreamError, NoBatchEndpoint, RetryableError, UpstreamError
from batchroute.plan import RunPlan, WorkItem
from batchroute.runner import batching as B
from batchroute.runner.adopt import adopt
from batchroute.runner.book import Book
from batchroute.runner.collect import TERMINAL
from batchroute.runner.cost import Pricer
from batchroute.runner.once import kill_point, read_marks
from batchroute.runner.poll import poll, read
from batchroute.runner.work import Control, RunOptions, Trail
from batchroute.store import ResultStore
from batchroute.types import BatchItem, BatchRow, BatchStatus, CostSource, RecordStatus, RunStatus

POLL_FIRST_S, POLL_MAX_S = 1.0, 300.0  # --wait: 1 s, doubling, at most 5 min between polls

Dispatch = Callable[[WorkItem, Trail], Awaitable[None]]


class Lane:
    """The batch tiers of one run: collect, skip, submit, wait."""

    def __init__(
        self, plan: RunPlan, opts: RunOptions, client: OpenRouterClient, store: ResultStore,
        book: Book, control: Control, log: Callable[[str], None], notes: list[str],
        budget: Budget,
    ) -> None:  # fmt: skip
        self.plan, self.opts, self.client, self.store = plan, opts, client, store
        self.book, self.control, self.run_id, self._log, self.notes = (
            book, control, book.run_id, log, notes,
        )  # fmt: skip
        self.budget = budget
        # Its own `Pricer`, seeded as the sync path's (`plan.resume`): a batch billed above
        # the catalogue raises the reservations of the batches submitted after it collects.
        self.pricer = Pricer(plan)
        self.job = plan.spec.name
        self.dispatch: Dispatch | None = None
        self.held: set[str] = set()  # keys in batches not collected yet: not sent again
        self.retry_sync: set[str] = set()  # keys whose batch item failed
        self.resubmit: set[str] = set()  # keys of an expired batch's unanswered items
        self.sync_tiers: set[str] = set()  # tiers whose model has no batch endpoint
        self.form: dict[str, str] = {}  # tier → the other id form, after one was refused
        self.skipped = 0
        self._open: list[tuple[BatchRow, Reservation | None]] = []
        self._items: dict[str, WorkItem] = {}  # this run's batched records, by key

    def _say(self, line: str) -> None:
        """A line for the log; before the run's progress exists (collecting earlier batches),
        a note, which the run prints with its first lines."""
        if self.book.progress is None:
            self.notes.append(line)
        else:
            self._log(line)

    def holds(self, item: WorkItem | None) -> bool:
        """The record is in a batch not collected yet (whatever tier it routes to now): the
        run that collects that batch books it, so it is not sent again."""
        if item is None or item.record.key not in self.held:
            return False
        self.skipped += 1
        return True

    @property
    def in_flight(self) -> int:
        """Batches submitted and not collected when the run ends (exit 7)."""
        return len(self._open)

    # ------------------------------------------------------------ earlier runs
    async def collect_earlier(self) -> None:
        """Collect (or adopt, or hold) every batch earlier runs of this job left open."""
        self.earlier = await asyncio.to_thread(self.store.open_batches, self.job)
        for row in self.earlier:
            if row.batch_id is None:
                found = await self._adopt(row)
                if found != "adopted":
                    if found == "kept":
                        self.held.update(i.key for i in row.items)
                        self._open.append((row, None))
                    continue
            doc = await self._poll(row)
            total = None
            if doc is not None and str(doc.get("status")) in TERMINAL:
                total = await self._collect(row, doc)
            if total is not None:  # today's spend held its reservation
                if row.intent_at.date() == self.opts.now().date():
                    self.budget.correct(row.reserved_usd, total)
            else:
                self.held.update(i.key for i in row.items)
                self._open.append((row, None))
        await read_marks(self.store, self.plan.spec, self.resubmit, self.retry_sync)  # kill-proof
        if self._open:
            n = sum(len(r.items) for r, _ in self._open)
            self._say(f"{len(self._open)} batch(es) of {n} records still in flight")
            self.budget.unbilled(sum((r.reserved_usd for r, _ in self._open), Decimal(0)))
        # Other jobs' batches still out are billed to the same key too (audit5).
        others = await asyncio.to_thread(self.store.open_batches, self.job, others=True)
        self.budget.unbilled(sum((r.reserved_usd for r in others), Decimal(0)))

    async def _adopt(self, row: BatchRow) -> str:
        """An intent: "adopted", "abandoned" or "kept" (see `runner/adopt.py`)."""
        return await adopt(self.client, self.store, row, self.opts.now(), self._say)

    # ------------------------------------------------------------------ worker
    async def worker(self, tier: str, q: asyncio.Queue[WorkItem | None]) -> None:
        """Drain a batch tier's queue, submit its batches, and (with --wait) collect them."""
        batch: list[WorkItem] = []
        again: list[WorkItem] = []  # unanswered when an earlier run's batch expired: round 2
        sync: list[asyncio.Task[None]] = []
        gate = asyncio.Semaphore(
            self.plan.tiers[tier].concurrency or self.plan.spec.limits.concurrency
        )
        while (item := await q.get()) is not None:
            key = item.record.key
            if self.control.stopping:
                self.book.pending(item)
            elif key in self.retry_sync or tier in self.sync_tiers or self._unbatchable(item):
                sync.append(asyncio.create_task(self._sync(item, gate)))
            else:
                pile = again if key in self.resubmit else batch
                pile.append(item)
                if len(pile) >= B.MAX_REQUESTS:  # a full batch goes now: memory stays bounded
                    await self.submit(tier, pile, gate, round_=2 if pile is again else 1)
                    pile.clear()
        if batch:
            await self.submit(tier, batch, gate)
        if again:
            await self.submit(tier, again, gate, round_=2)
        await asyncio.gather(*sync)
        if self.opts.wait:
            await self.wait(gate)

    def _unbatchable(self, item: WorkItem) -> bool:
        model = self.plan.tiers[item.tier].models[0]
        why = B.why_not_batchable(
            item.messages, self.plan.spec.request.max_tokens, item.prompt_bound,
            self.plan.catalog.get(model),
        )  # fmt: skip
        return why is not None

    async def _sync(self, item: WorkItem, gate: asyncio.Semaphore) -> None:
        assert self.dispatch is not None
        async with gate:
            if self.control.stopping:
                self.book.pending(item)
                return
            trail = Trail()
            try:
                await self.dispatch(item, trail)
            except asyncio.CancelledError:
                self.book.pending(item, trail)
                raise

    # ------------------------------------------------------------------ submit
    async def submit(
        self, tier: str, items: list[WorkItem], gate: asyncio.Semaphore, *, round_: int = 1
    ) -> None:
        """Submit `items` in batches of ≤ 5,000 requests, each reserved at its worst case
        first; what does not fit under the cap stays pending (never submitted over it)."""
        model = self.form.get(tier) or B.batch_model(
            self.plan.tiers[tier].models[0], self.plan.catalog.models
        )
        params = dict(self.plan.params)
        reqs = [
            {"custom_id": B.custom_id(self.job, it.record.key),
             "body": B.item_body(it.messages, params)}
            for it in items
        ]  # fmt: skip
        sizes = [len(orjson.dumps(r)) for r in reqs]
        for part in B.chunks(sizes):
            chunk = [items[i] for i in part]
            creqs = [reqs[i] for i in part]
            if tier in self.sync_tiers:
                await asyncio.gather(*(self._sync(it, gate) for it in chunk))
                continue
            prices = [self.pricer.price(it.prompt_bound, (model,)) for it in chunk]
            worst = [w for _, w in prices]
            # at list price above the whole cap (not merely at a learnt ratio: that waits)
            huge = [i for i, (listed, _) in enumerate(prices) if self.budget.exceeds_cap(listed)]
            if huge:  # can never fit today's cap: the sync path fails it (exceeds_daily_cap)
                await asyncio.gather(*(self._sync(chunk[i], gate) for i in huge))
                keep = [i for i in range(len(chunk)) if i not in set(huge)]
                chunk, creqs = [chunk[i] for i in keep], [creqs[i] for i in keep]
                worst = [worst[i] for i in keep]
            n = B.fitting_prefix(worst, self.budget.remaining)
            for it in chunk[n:]:  # the cap cannot take them today: pending, never over it
                self.book.pending(it, why=("budget_exhausted", "the batch would exceed the cap"))
            if n < len(chunk):
                self.control.stop(RunStatus.BUDGET_EXHAUSTED)
            if n:
                worst_n = sum(worst[:n], Decimal(0))
                await self._submit_one(tier, model, chunk[:n], creqs[:n], worst_n, gate, round_)

    async def _submit_one(
        self, tier: str, model: str, chunk: list[WorkItem], reqs: list[dict[str, Any]],
        worst: Decimal, gate: asyncio.Semaphore, round_: int,
    ) -> None:  # fmt: skip
        r = self.budget.try_reserve(worst)
        if r is None:  # cannot happen: fitting_prefix saw the room; but never send unreserved
            for it in chunk:
                self.book.pending(it, why=("budget_exhausted", "the batch would exceed the cap"))
            return
        body = B.create_body(model, reqs)
        now = self.opts.now()
        digest = hashlib.sha256(body + f"{self.run_id}:{round_}".encode()).hexdigest()
        row = BatchRow(
            "bk" + digest[:30], self.job, self.run_id, tier, model,
            [BatchItem(it.record.key, it.record.line_no, rq["custom_id"], it.cls.task_type,
                       it.cls.complexity, it.cls.reason, it.fp, it.prompt_bound)
             for it, rq in zip(chunk, reqs, strict=True)],
            now, worst, round=round_,
        )  # fmt: skip
        await asyncio.to_thread(self.store.save_batch, row, new=True)  # the intent, first
        try:
            doc = await create_batch(self.client, body, model=model)
        except NoBatchEndpoint as exc:
            await self._refused(row, r, str(exc))
            if tier not in self.form:  # the other id form, once (reserved at its own price)
                self.form[tier] = B.other_form(model)
                self._say(f"tier {tier}: {exc}; trying {self.form[tier]}")
                await self.submit(tier, chunk, gate, round_=round_)
                return
            self.sync_tiers.add(tier)
            warning = f"tier {tier}: {exc}; its records go through synchronous calls this run"
            self.notes.append(warning)  # printed as a note, and in the run's report
            await asyncio.gather(*(self._sync(it, gate) for it in chunk))
            return
        except RetryableError as exc:  # outcome unknown: looked up before anything is resent
            self._say(f"batch {row.batch_key}: POST outcome unknown ({exc}); kept as an intent")
            self.held.update(i.key for i in row.items)
            self._items.update((it.record.key, it) for it in chunk)
            self._open.append((row, r))
            return
        except UpstreamError as exc:
            await self._refused(row, r, str(exc))
            if isinstance(exc, FatalUpstreamError):  # 401, 402: nothing more can be sent
                self.control.stop(RunStatus.FAILED, exc)
            for it in chunk:
                self.book.pending(it, why=(exc.error_type, f"batch refused: {exc}"[:500]))
            return
        row.batch_id, row.status, row.submitted_at = str(doc["id"]), BatchStatus.SUBMITTED, now
        await asyncio.to_thread(self.store.save_batch, row)  # before the run moves on
        self._items.update((it.record.key, it) for it in chunk)
        self._open.append((row, r))
        self._say(f"tier {tier}: batch {row.batch_id} submitted ({len(chunk)} records, "
                  f"${worst} reserved)")  # fmt: skip

    async def _refused(self, row: BatchRow, r: Reservation, error: str) -> None:
        """A POST the API refused: nothing was created, so nothing is committed."""
        self._release(r)
        row.status, row.error_message = BatchStatus.REJECTED, error[:500]
        row.settled_usd = Decimal(0)
        await asyncio.to_thread(self.store.save_batch, row)

    # -------------------------------------------------------------------- wait
    async def wait(self, gate: asyncio.Semaphore) -> None:
        """Poll the open batches with backoff until each is collected (or the run stops)."""
        delay = POLL_FIRST_S
        while self._open and not self.control.interrupted:
            for entry in list(self._open):
                row, r = entry
                if row.batch_id is None:
                    found = await self._adopt(row)
                    if found == "kept":
                        continue
                    if found == "abandoned":
                        self._open.remove(entry)
                        self._release(r, row)
                        for it in self._of(row):  # sent again by the next run, not this one
                            self.book.pending(it, why=("batch_abandoned", "POST never landed"))
                        continue
                doc = await self._poll(row)
                if doc is None or str(doc.get("status")) not in TERMINAL:
                    continue
                total = await self._collect(row, doc)
                if total is None:
                    continue
                self._open.remove(entry)
                self._booked(r, row, total)
                await self._after(row, gate)
            if self._open and not self.control.interrupted:
                n = sum(len(r.items) for r, _ in self._open)
                self._say(
                    f"waiting for {len(self._open)} batch(es) of {n} records; "
                    f"next poll in {delay:g} s"
                )
                await self._nap(delay)
                delay = min(delay * 2, POLL_MAX_S)

    async def _nap(self, seconds: float) -> None:
        """Sleep between polls in steps of at most a second: Ctrl-C ends a 5-minute wait at
        once (the batches stay recorded; the next run collects them)."""
        left = seconds
        while left > 0 and not self.control.interrupted:
            step = min(left, 1.0)
            await self.opts.sleep(step)
            left -= step

    def _of(self, row: BatchRow) -> list[WorkItem]:
        return [self._items[i.key] for i in row.items if i.key in self._items]

    def _release(self, r: Reservation | None, row: BatchRow | None = None) -> None:
        """Drop this run's reservation `r`; or, for an earlier run's batch (`row`) given up,
        the room the key's ceiling left for it."""
        if r is not None:
            self.budget.release(r)
        elif row is not None:
            self.budget.landed(row.reserved_usd)

    def _booked(self, r: Reservation | None, row: BatchRow, total: Decimal) -> None:
        """A collected batch's bill: this run's reservation `r` settled; or, for an earlier
        run's batch, the key's room for it dropped and today's spend corrected to the bill."""
        if r is not None:
            self.budget.settle(r, total)
            return
        self.budget.landed(row.reserved_usd)
        if row.intent_at.date() == self.opts.now().date():
            self.budget.correct(row.reserved_usd, total)

    async def _after(self, row: BatchRow, gate: asyncio.Semaphore) -> None:
        """In this run: failed items through the sync chain, expired ones resubmitted once."""
        keys = [i.key for i in row.items]
        redo = [self._items[k] for k in keys if k in self.resubmit and k in self._items]
        sync = [self._items[k] for k in keys if k in self.retry_sync and k in self._items]
        self.held.difference_update(keys)
        self.resubmit.difference_update(keys)  # handled here, once
        self.retry_sync.difference_update(keys)
        await asyncio.gather(*(self._sync(it, gate) for it in sync))
        if redo and not self.control.stopping:
            await self.submit(row.tier, redo, gate, round_=row.round + 1)

    async def _poll(self, row: BatchRow) -> dict[str, Any] | None:
        return await poll(self.client, row, self.opts.now(), self._say)

    async def _collect(self, row: BatchRow, doc: dict[str, Any]) -> Decimal | None:
        """Settle a terminal batch onto its items and write everything in one transaction;
        None (nothing written) when its answers cannot be read now."""
        got = await read(self.client, self.plan, row, doc, now=self.opts.now(), run_id=self.run_id)
        if got is None:  # a results page failed: its paid answers are read at a later poll
            return None
        bill, out = got
        status = str(doc.get("status"))
        for a in out.attempts:  # what each item's bill says of the model's price (`learn`)
            if a.cost_source != CostSource.RESERVED and a.reserved_usd is not None:
                self.pricer.learn(row.model, a.cost_usd, a.reserved_usd, a.listed_usd)
        await asyncio.to_thread(self.store.collect_batch, row, out.results, out.attempts)
        kill_point("collected")  # tests only: a kill before the expired items are resubmitted
        self.retry_sync.update(out.retry_sync)
        self.resubmit.update(out.resubmit)
        c = self.book.counts
        c.done += len(out.done)
        c.cost_usd += bill.total
        out.count_reserved(self.book)  # for the end note, as `report` counts them
        if self.book.progress is not None:
            for res in out.results:
                self.book.progress.record(row.tier, RecordStatus(res.status), res.cost_usd)
        self._say(f"batch {row.batch_id} {status}: {len(out.done)} done, "
                  f"{len(out.retry_sync)} to retry, ${bill.total} ({bill.source})")  # fmt: skip
        return bill.total
