"""The run's books: result and attempt rows, the write-ahead journal, counters, the one writer.

Every row is journaled the moment it exists (so kill -9 loses only calls in flight); the run
holds no row itself. At least every 5 s the journal is closed as a numbered segment and
handed to the writer process (`runner/sink.py`, `batchroute.writer`), which commits it to
DuckDB: the run's own process never touches the file while records flow (issue 11).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from batchroute.errors import StoreError
from batchroute.journal import Journal, read_segment
from batchroute.progress import Progress
from batchroute.runner import handover, rows
from batchroute.runner.handover import FLUSH_EVERY_S, FLUSH_ROWS, MAX_BUFFERED, TAIL_FLUSH_S
from batchroute.runner.sink import WriterProcess, end_order
from batchroute.runner.work import Call, IdQueue, IdSeen, Trail, WorkItem
from batchroute.store import ResultStore
from batchroute.types import (
    AttemptOutcome,
    CostFix,
    CostSource,
    Record,
    RecordStatus,
    RunCounts,
    RunStatus,
)

# Enum members looked up once: through the enum's class, each costs ~0.24 µs (Python 3.11).
_OK, _DONE, _RESERVED = AttemptOutcome.OK, RecordStatus.DONE, CostSource.RESERVED


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
        self._ids = (run_id, job_name)
        self._flights = rows.InFlight(self._ids)
        self._ids_seen = IdQueue(self.identified)  # generation ids, journaled a step later
        self.now = now
        self.counts = RunCounts()
        self.progress: Progress | None = None
        self._in_flight: dict[tuple[str, int], bytes] = {}  # their journal lines
        self._unrotated = 0  # result rows journaled since the last hand-over
        self._dirty = False  # anything (row or fix) journaled since the last hand-over
        self._sent: deque[tuple[Path, int]] = deque()  # segments handed over, not committed
        self._sent_rows = 0  # their result rows
        self._sink: WriterProcess | None = None
        self._acks: asyncio.Task[None] | None = None
        self._finishing: asyncio.Future[None] | None = None
        self._last: asyncio.TimerHandle | None = None  # the hand-over `close` put off
        self._ended: tuple[RunStatus, RunCounts] | None = None  # what the writer closes the run as
        self._error: Exception | None = None  # the writer's failure
        self._raised = False  # whether the writer's failure was raised to the run already
        self._flush_now = asyncio.Event()
        self._flushed = asyncio.Event()
        self._closing = False
        self.flush_every = FLUSH_EVERY_S  # `TAIL_FLUSH_S` once the input is read (issue 11)
        self.writer_failed = False
        self.reserved_left = 0  # this run's attempts booked at their reservation, not fixed
        self.reserved_left_id = 0  # …of which have a generation id (the next run asks about)

    # ------------------------------------------------------------------ rows
    # Journaled as dicts of their fields (`runner/rows.py`), never row objects (issue 11).
    def sending(
        self, item: WorkItem, tier: str, attempt_no: int, model: str, started: datetime,
        reserved: Decimal, listed: Decimal | None = None,
    ) -> tuple[str, int]:  # fmt: skip
        """A call is about to go out: journal it at its reservation first, so that a kill -9
        while it is in flight still leaves it on the books (the provider may bill it).

        The row is replayed only if no answer row for the same attempt follows it; it is
        never written to the database by this run. Returns the token for `landed`.
        """
        key = item.record.key
        line = self._flights.line(key, attempt_no, tier, model, started, reserved, listed)
        self.journal.append_line(line)
        token = (key, attempt_no)
        self._in_flight[token] = line  # journaled again at hand-overs
        return token

    def seen(self, token: tuple[str, int]) -> IdSeen:
        """The `CallSeen` of the call `sending` returned `token` for: its generation id is
        journaled soon after the client learns it (`identified`)."""
        return IdSeen(self._ids_seen, token)

    def identified(self, token: tuple[str, int], generation_id: str) -> None:
        """A call in flight has its generation id: its `in_flight` row is journaled again with
        it, so that a kill -9 leaves a `killed` row the next run asks /generation about
        (`journal.settle_in_flight`; an older replay keeps the first row, without the id)."""
        line = self._in_flight.get(token)
        if line is None:  # landed already
            return
        # As `rows.InFlight` wrote it; a JSON string cannot hold these bytes (quotes escaped)
        line = line.replace(
            b'"generation_id":null', b'"generation_id":' + orjson.dumps(generation_id), 1
        )
        self._in_flight[token] = line  # again at hand-overs, with the id
        self.journal.append_line(line)

    def flight(self, token: tuple[str, int]) -> bytes | None:
        """The open `in_flight` line of `token`'s call (`Call.flight`, `rows.attempt_line`)."""
        return self._in_flight.get(token)

    def landed(self, token: tuple[str, int]) -> None:
        """The call's own attempt row is (or is about to be) booked."""
        self._in_flight.pop(token, None)

    def attempt(
        self, item: WorkItem, tier: str, attempt_no: int, call: Call, outcome: AttemptOutcome
    ) -> None:
        flight = call.flight
        if flight is not None:  # its in-flight line's first fields are this line's (issue 11)
            line, gen_id = rows.attempt_line(flight, call, outcome)
            self.journal.append_line(line)
        else:
            row = rows.attempt(self._ids, item.record.key, attempt_no, tier, call, outcome)
            self.journal.append_fields(b"a", row)
            gen_id = row["generation_id"]
        self._dirty = True
        self.counts.cost_usd += call.cost
        if call.source is _RESERVED:
            self.reserved_left += 1
            self.reserved_left_id += gen_id is not None

    def _result(self, item: WorkItem | Record, status: RecordStatus, **kw: Any) -> None:
        row = rows.result(self._ids, item, status, self.now(), kw)
        # In the tier it was routed to (its progress total), escalated or not.
        self._booked(row, item.tier if isinstance(item, WorkItem) else "-", status)

    def _booked(self, row: dict[str, Any], routed: str, status: RecordStatus) -> None:
        """Journal a result row (its `cost_usd` still a Decimal) and count it."""
        cost = row["cost_usd"]
        row["cost_usd"] = str(cost)
        self.journal.append_fields(b"r", row)
        self._dirty = True
        self._unrotated += 1
        if self._unrotated >= FLUSH_ROWS:
            self._flush_now.set()
        if self.progress is not None:
            self.progress.record(routed, status, cost)

    def fix(self, fix: CostFix, delta: Decimal, tier: str, *, reserved: bool = True) -> None:
        """A reserved attempt's real cost is known: journaled (tag `f`) and committed after the
        rows of its segment; a replay skips it (a fix lost to a kill is made again by the next
        run). `tier` is the one its record was routed to: once the record's row is booked, its
        progress row moves by `delta` too (before, the row itself carries the fixed cost).
        `reserved`: false for an attempt priced from its tokens (not counted in `reserved_left`)."""
        self.journal.append(fix)
        self._dirty = True
        self.counts.cost_usd += delta
        if reserved:
            self.reserved_left -= 1
            self.reserved_left_id -= 1
        if fix.recompute_result and self.progress is not None:
            self.progress.fixed(tier, delta)

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
            **rows.answer(t.answer),
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
            **rows.answer(trail.answer),
        )

    def done(self, item: WorkItem, tier: str, trail: Trail, call: Call) -> None:
        self.attempt(item, tier, trail.attempts, call, _OK)
        self.counts.done += 1
        trail.booked = True
        row = rows.done(self._ids, item, tier, trail, call, self.now())
        self._booked(row, item.tier, _DONE)

    def tail(self) -> None:
        """The input is read: hand over now, then every `TAIL_FLUSH_S`, so the segment the
        run's end waits for is a small one (issue 11)."""
        self.flush_every = TAIL_FLUSH_S
        self._flush_now.set()

    async def room(self) -> None:
        """Wait while more than MAX_BUFFERED result rows are not committed yet (the writer
        process is behind, e.g. a reader holds the file)."""
        while self._sent_rows + self._unrotated > MAX_BUFFERED and not self._closing:
            self._flush_now.set()
            self._flushed.clear()
            await self._flushed.wait()

    # ---------------------------------------------------------------- writer
    async def start_writer(self) -> None:
        """Start the writer process (once), as early as the run can: its start-up then
        overlaps the run's own (store, catalogue, resume join)."""
        if self._sink is None:
            sink = self._sink = WriterProcess(self.store.path, self.store.write_timeout)
            await sink.start()
            self._acks = asyncio.ensure_future(self._read_acks(sink))

    def begin_in_writer(self, marker: Path, order: bytes, *, hold: bool) -> asyncio.Future[None]:
        """The start's writes, for the writer process (runner/start.py): answered as `marker`,
        a segment of no rows that every segment waits for; done once answered. `hold`: sent
        at `calls_out`, or before the first segment or the end (a fresh schema: 0.1 s CPU)."""
        assert self._sink is not None
        self._sent.append((marker, 0))
        return self._sink.begin(marker, order, hold=hold)

    def calls_out(self) -> None:  # the first calls are out (`Feeder._calls_out`)
        if self._sink is not None:
            self._sink.release()  # a `begin_in_writer` held back for them

    async def writer(self) -> None:
        """Start the writer process, then hand it the journal as a segment at least every
        second, or early when rows pile up, until `close()`. Raises the writer's StoreError
        (a file held past the busy timeout, a full disk), which stops the run.

        `finish` hands over the rest once the workers are done and waits for the commit.
        """
        await self.start_writer()
        while not self._closing:
            await handover.tick(self._flush_now, self.flush_every)  # (not wait_for: a cancel kept)
            self._flush_now.clear()
            if not self._closing:
                self._hand_over()
        if self._error is not None:
            self._raised = True
            raise self._error

    def _hand_over(self, *, apply: bool = True) -> Path | None:
        """Close the journal as a segment and send it to the writer (unless not `apply`)."""
        if not self._dirty or self._sink is None or self.writer_failed:
            return None
        seg = self.journal.rotate_segment()
        if seg is None:
            return None
        self._dirty = False
        for line in self._in_flight.values():  # still open: the new journal holds it
            self.journal.append_line(line)
        self._sent.append((seg, self._unrotated))
        self._sent_rows += self._unrotated
        self._unrotated = 0
        if apply:
            self._sink.apply(seg)
        return seg

    async def _read_acks(self, sink: WriterProcess) -> None:
        """Forget each segment the writer process has committed, in order."""
        try:
            while (seg := await sink.reply()) is not None:
                sent, rows = self._sent.popleft()
                assert sent == seg, f"the writer committed {seg}, expected {sent}"
                self._sent_rows -= rows
                self._flushed.set()
        except StoreError as exc:
            self._fail(exc)
        except (OSError, ValueError) as exc:  # the pipe broke, a line too long: stop the run
            self._fail(StoreError(f"writing results failed: {exc}"))

    def _fail(self, exc: Exception) -> None:
        self._error, self.writer_failed, self._closing = self._error or exc, True, True
        self._flush_now.set()  # the writer task wakes and raises it
        self._flushed.set()  # nobody may wait for a flush that will not come

    def close(self) -> None:
        """Stop the writer task; hand over what is journaled `TAIL_FLUSH_S` later unless
        `finish` began (its last transaction then takes it: one commit, not two), so that the
        writer commits while the run drains its polls, if it has any (issue 11)."""
        if self._last is None and self._finishing is None:
            self._last = asyncio.get_running_loop().call_later(TAIL_FLUSH_S, self._timed)
        self._closing = True
        self._flush_now.set()
        self._flushed.set()

    def _timed(self) -> None:
        """`close`'s hand-over: its failure is the run's (`flush_last`), not the loop's."""
        try:
            self._hand_over()
        except Exception as exc:  # noqa: BLE001 - kept for the run, with what it was
            self._error = self._error or StoreError(f"handing the journal over failed: {exc}")

    def finish_soon(self, status: RunStatus | None = None) -> None:
        """Start `finish` now (no row can come any more), beside the HTTP session's close
        (0.05-0.3 s at 2,048 connections: issue 11); with the run's `status`, the writer
        closes the run's row and counts the job's statuses in its last transaction."""
        if self._finishing is None:
            if status is not None:
                self._ended = (status, replace(self.counts))
            self._finishing = asyncio.ensure_future(self._finish())

    def ended_as(self, status: RunStatus) -> dict[str, int] | None:
        """The job's status counts if the writer process closed the run's row with `status`
        and today's counters, and every row is committed: the run need not open the file
        again. None otherwise (the run closes its row itself: `runner/setup.close_store`)."""
        ended, sink = self._ended, self._sink
        if ended is None or sink is None or sink.statuses is None:
            return None
        if ended != (status, self.counts) or self._dirty or self._sent or self.writer_failed:
            return None
        return sink.statuses

    async def finish(self) -> None:
        """Once no row can come any more: hand the rest to the writer process and wait until
        it has committed every segment and ended (else, or cancelled, it is killed; what it
        had not committed stays in the journal for the next run's replay)."""
        self.finish_soon()
        assert self._finishing is not None
        await self._finishing

    async def _finish(self) -> None:
        sink = self._sink
        if sink is None:
            return
        if self._last is not None:  # (or it ran: then only what came since is left)
            self._last.cancel()
        try:
            if not self.writer_failed:
                if self._ended is None:
                    self._hand_over()
                    sink.quit()
                else:  # the last segment in the run's last transaction: one commit, not two
                    last = self._hand_over(apply=False)
                    sink.finish(end_order(*self._ids, *self._ended, self.now(), last))
            if self._acks is not None:
                await self._acks
            await sink.wait()
        finally:
            sink.kill()
            if self._sent and not self.writer_failed:  # cut short: nothing may be written after
                self._fail(StoreError("the run ended before its rows were all written"))

    def flush_last(self) -> None:
        """Synchronously commit what no writer process took (it never started), in this
        process; raise the writer's failure if the run has not heard of it yet. After a
        failure nothing is written: the rows stay in order in the journal for the replay."""
        if self._error is not None and not self._raised:
            self._raised = True
            raise self._error
        if self.writer_failed or self._sent or not self._dirty:
            return
        seg = self.journal.rotate_segment()
        if seg is not None:
            self._dirty = False
            results, attempts, fixes = read_segment(seg)
            self.store.write(results, attempts, fixes)
            seg.unlink()
