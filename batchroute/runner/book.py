"""The run's books: result and attempt rows, the write-ahead journal, counters, the one writer.

Every row is journaled the moment it exists (so kill -9 loses only calls in flight) and
flushed to DuckDB by a single writer task at least once a second.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

from batchroute.errors import BatchrouteError, StoreError
from batchroute.journal import Journal
from batchroute.progress import Progress
from batchroute.runner.work import Call, Trail, WorkItem
from batchroute.store import ResultStore
from batchroute.types import (
    AttemptOutcome,
    AttemptRow,
    Completion,
    CostFix,
    CostSource,
    Record,
    RecordStatus,
    ResultRow,
    RunCounts,
)

FLUSH_EVERY_S = 1.0  # design §7: commit at least every second (the journal covers kill -9)
FLUSH_ROWS = 5_000  # flush early when this many result rows wait: each flush opens the file
MAX_BUFFERED = 4 * FLUSH_ROWS  # the feeder waits above this (pending rows after a stop)


def _finite(x: Decimal | None) -> Decimal | None:
    """A reported figure as it can be stored (NaN and infinities are not amounts)."""
    return x if x is not None and x.is_finite() and abs(x) < 10**20 else None


def _answer(c: Completion | None) -> dict[str, Any]:
    """A paid answer that failed a quality check (cut off, empty, not JSON), for the row of a
    record that ends without a better one: it was paid for, so it is never thrown away."""
    if c is None:
        return {}
    return {
        "model_served": c.model,
        "provider": c.provider,
        "output": c.content,
        "finish_reason": c.finish_reason,
        "prompt_tokens": c.usage.prompt_tokens,
        "completion_tokens": c.usage.completion_tokens,
        "generation_id": c.generation_id,
    }


class Book:
    """Rows waiting for the store, with the counters and progress they feed."""

    def __init__(
        self,
        store: ResultStore,
        journal: Journal,
        *,
        run_id: str,
        job_name: str,
        now: Callable[[], datetime],
    ) -> None:
        self.store = store
        self.journal = journal
        self.run_id = run_id
        self.job_name = job_name
        self.now = now
        self.counts = RunCounts()
        self.progress: Progress | None = None
        self._results: list[ResultRow] = []
        self._attempts: list[AttemptRow] = []
        self._fixes: list[CostFix] = []
        self._in_flight: dict[tuple[str, int], AttemptRow] = {}
        self._flush_now = asyncio.Event()
        self._flushed = asyncio.Event()
        self._closing = False
        self.writer_failed = False

    # ------------------------------------------------------------------ rows
    def sending(
        self, item: WorkItem, tier: str, attempt_no: int, model: str, started: datetime,
        reserved: Decimal,
    ) -> tuple[str, int]:  # fmt: skip
        """A call is about to go out: journal it at its reservation first, so that a kill -9
        while it is in flight still leaves it on the books (the provider may bill it).

        The row is replayed only if no answer row for the same attempt follows it; it is
        never written to the database by this run. Returns the token for `landed`.
        """
        row = AttemptRow(
            self.run_id, self.job_name, item.record.key, attempt_no, tier, model, started, 0,
            None, AttemptOutcome.IN_FLIGHT, "killed_in_flight",
            "the run died with this call in flight; booked at its reservation", reserved,
            CostSource.RESERVED, None, reserved,
        )  # fmt: skip
        token = (item.record.key, attempt_no)
        self._in_flight[token] = row
        self.journal.append(row)
        return token

    def landed(self, token: tuple[str, int]) -> None:
        """The call's own attempt row is (or is about to be) booked."""
        self._in_flight.pop(token, None)

    def attempt(
        self, item: WorkItem, tier: str, attempt_no: int, call: Call, outcome: AttemptOutcome
    ) -> None:
        err, c = call.error, call.completion
        row = AttemptRow(
            self.run_id,
            self.job_name,
            item.record.key,
            attempt_no,
            tier,
            call.model,
            call.started,
            call.latency_ms,
            (err.status or None) if err else (c.http_status if c else None),
            outcome,
            err.error_type if err else (call.flag[0] if call.flag else None),
            str(err)[:500] if err else (call.flag[1] if call.flag else None),
            call.cost,
            call.source,
            call.generation_id or (err.generation_id if err else (c.generation_id if c else None)),
            call.reserved,
            _finite(c.usage.cost if c is not None else (err.cost if err else None)),
            _finite(c.usage.upstream_cost) if c is not None and c.usage.is_byok else None,
        )
        self._attempts.append(row)
        self.journal.append(row)
        self.counts.cost_usd += call.cost

    def _result(self, item: WorkItem | Record, status: RecordStatus, **kw: Any) -> None:
        rec = item.record if isinstance(item, WorkItem) else item
        row = ResultRow(
            self.job_name, rec.key, self.run_id, rec.line_no, status, created_at=self.now(), **kw
        )
        row.line_fp = rec.line_fp  # lets the next run skip this very line unparsed (issue 11)
        if isinstance(item, WorkItem):
            row.task_type, row.complexity = item.cls.task_type, item.cls.complexity
            row.classifier, row.request_fp = item.cls.reason, item.fp
            row.tier = row.tier or item.tier
            row.arm = item.arm
        self._results.append(row)
        self.journal.append(row)
        if len(self._results) >= FLUSH_ROWS:
            self._flush_now.set()
        if self.progress is not None:
            # In the tier it was routed to (its progress total), escalated or not.
            routed = item.tier if isinstance(item, WorkItem) else "-"
            self.progress.record(routed, status, row.cost_usd)

    def fix(self, fix: CostFix, delta: Decimal) -> None:
        """A reserved attempt's real cost is known: written after the rows of the same flush
        (not journaled: a fix lost to a kill is made again by the next run)."""
        self._fixes.append(fix)
        self.counts.cost_usd += delta

    def invalid(self, rec: Record, reason: str) -> None:
        self.counts.invalid += 1
        self._result(rec, RecordStatus.INVALID, error_type="invalid_input", error_message=reason)

    def pending(
        self, item: WorkItem, trail: Trail | None = None, *, why: tuple[str, str] | None = None
    ) -> None:
        """Left for the next run; `why` is (error_type, message) when there is a reason to say."""
        self.counts.pending += 1
        t = trail or Trail()
        t.booked = True
        self._result(
            item,
            RecordStatus.PENDING,
            cost_usd=t.cost,
            attempts=t.attempts,
            escalations=t.escalations,
            error_type=why[0] if why else None,
            error_message=why[1] if why else None,
            **_answer(t.answer),
        )

    def failed(self, item: WorkItem, tier: str, trail: Trail) -> None:
        self.counts.failed += 1
        trail.booked = True
        e = trail.last_error
        self._result(
            item,
            RecordStatus.FAILED,
            tier=tier,
            cost_usd=trail.cost,
            attempts=trail.attempts,
            escalations=trail.escalations,
            error_type=e.error_type if e else "no_model",
            error_message=str(e)[:500] if e else "no model could be tried",
            model_requested=e.model if e else None,
            **_answer(trail.answer),
        )

    def done(self, item: WorkItem, tier: str, trail: Trail, call: Call) -> None:
        c = call.completion
        assert c is not None
        self.attempt(item, tier, trail.attempts, call, AttemptOutcome.OK)
        self.counts.done += 1
        trail.booked = True
        self._result(
            item,
            RecordStatus.DONE,
            tier=tier,
            model_requested=call.model,
            model_served=c.model,
            provider=c.provider,
            output=c.content,
            finish_reason=c.finish_reason,
            prompt_tokens=c.usage.prompt_tokens,
            completion_tokens=c.usage.completion_tokens,
            cost_usd=trail.cost,
            cost_source=call.source,
            latency_ms=call.latency_ms,
            attempts=trail.attempts,
            escalations=trail.escalations,
            generation_id=c.generation_id,
        )

    async def room(self) -> None:
        """Wait while more rows are buffered than MAX_BUFFERED (the writer drains them)."""
        while len(self._results) > MAX_BUFFERED and not self._closing:
            self._flush_now.set()
            self._flushed.clear()
            await self._flushed.wait()

    # ---------------------------------------------------------------- writer
    def _take(self) -> tuple[list[ResultRow], list[AttemptRow], list[CostFix]]:
        results, attempts, fixes = self._results, self._attempts, self._fixes
        self._results, self._attempts, self._fixes = [], [], []
        return results, attempts, fixes

    async def writer(self) -> None:
        """The one writer: flush at least every second, or early when rows pile up.

        It stops after the flush that follows `close()`; `flush_last` writes what is left, so
        nothing done is lost even when the pipeline fails.
        """
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flush_now.wait(), FLUSH_EVERY_S)
            self._flush_now.clear()
            results, attempts, fixes = self._take()
            if results or attempts or fixes:
                self.journal.rotate()  # same loop step as _take: the same rows
                for row in self._in_flight.values():  # still open: the new journal holds it
                    self.journal.append(row)
                try:
                    await _finish_even_if_cancelled(
                        asyncio.to_thread(self.store.write, results, attempts, fixes),
                        self.journal.flushed,
                    )
                except BatchrouteError:
                    self._failed()
                    raise
                except Exception as exc:  # e.g. OSError from a temp file: say so, stop the run
                    self._failed()
                    raise StoreError(f"writing results failed: {exc}") from exc
                self.journal.flushed()
            self._flushed.set()

    def _failed(self) -> None:
        self.writer_failed = True
        self._closing = True
        self._flushed.set()  # nobody may wait for a flush that will not come

    def close(self) -> None:
        """Ask the writer to stop after one more flush."""
        self._closing = True
        self._flush_now.set()
        self._flushed.set()

    def flush_last(self) -> None:
        """Synchronously write whatever is left (called once the workers are done)."""
        results, attempts, fixes = self._take()
        if (results or attempts or fixes) and self.journal.rotate():
            self.store.write(results, attempts, fixes)
            self.journal.flushed()


async def _finish_even_if_cancelled(write: Awaitable[None], then: Callable[[], None]) -> None:
    """Await a write running in a thread, then call `then`. Cancelled meanwhile (the run was),
    it still waits for the thread, which goes on regardless: the rows it took are committed
    (and `then` forgets their journal) before anything closes the store behind it, so the
    last flush still writes the rest instead of leaving it to the next run's replay."""
    task = asyncio.ensure_future(write)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):  # its error is not the news: the cancel is
            await task
        if task.done() and not task.cancelled() and task.exception() is None:
            then()
        raise
    then()
