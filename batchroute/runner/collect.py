"""A finished batch's rows: each item's result and attempt, from its result line and its share
of the bill. Pure: `runner/lane.py` writes them in one transaction with the batch's status."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from batchroute.runner import quality
from batchroute.runner.batching import Bill, ItemResult
from batchroute.runner.book import Book
from batchroute.types import (
    AttemptOutcome,
    AttemptRow,
    BatchItem,
    BatchRow,
    CostSource,
    RecordStatus,
    ResultRow,
)

BATCH_ATTEMPT_NO = 0
"""A batch item's attempt number. Synchronous attempts count from 1: a record retried
synchronously in the run that collected its batch keeps distinct attempt numbers (a cost fix
is keyed by run, record and attempt number)."""

GONE = "gone"  # ours, not the API's: 404 long after the submit (see lane.py `_poll`)
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled", GONE})


@dataclass(slots=True)
class Collected:
    """What collecting one batch decided, per record."""

    results: list[ResultRow] = field(default_factory=list)
    attempts: list[AttemptRow] = field(default_factory=list)
    done: list[str] = field(default_factory=list)  # record keys
    retry_sync: list[str] = field(default_factory=list)  # failed items: the tier's sync chain
    resubmit: list[str] = field(default_factory=list)  # unanswered in an expired batch, round 1

    def count_reserved(self, book: Book) -> None:
        """Add this batch's attempts booked at their reservation to the run's count of them:
        the store writes these rows, not `Book.attempt`, which counts its own; the end note
        then says what `report` says."""
        kept = [a for a in self.attempts if a.cost_source == CostSource.RESERVED]
        book.reserved_left += len(kept)
        book.reserved_left_id += sum(a.generation_id is not None for a in kept)


@dataclass(frozen=True, slots=True)
class Terms:
    """Per custom_id: an item's share of its batch's reservation, and its worst case at list
    prices (both empty: not known, the attempt keeps NULLs)."""

    reserved: dict[str, Decimal] = field(default_factory=dict)
    listed: dict[str, Decimal] = field(default_factory=dict)

    def keep(self, a: AttemptRow, cid: str) -> None:
        """Put an item's figures on its attempt row."""
        a.reserved_usd, a.listed_usd = self.reserved.get(cid), self.listed.get(cid)


def collect_rows(
    row: BatchRow,
    status: str,
    items: dict[str, ItemResult],
    bill: Bill,
    *,
    now: datetime,
    error: str | None,
    run_id: str,
    checks: Collection[str] = ("empty",),
    wants_json: bool = False,
    terms: Terms | None = None,
) -> Collected:
    """Rows for every item of `row`, a batch that ended in `status`, booked to `run_id`: the
    run that collects it (its spend becomes known then; `batches.run_id` keeps the submitter).
    An answer that fails the job's quality `checks` (empty content always counts) is paid for
    and kept out of `done`: its record goes through the tier's synchronous chain, as a failed
    item does. `terms`: each item's reservation and list-price worst case, by custom_id, kept
    on its attempt (what a learnt ratio is measured by: `store.ratios`, `Pricer.learn`)."""
    out = Collected()
    t = terms or Terms()
    for it in row.items:
        r = items.get(it.custom_id)
        cost = bill.shares.get(it.custom_id, Decimal(0))
        c = r.completion if r is not None else None
        weak = None
        if c is not None:
            weak = quality.problem(c, {*checks, "empty"}, wants_json=wants_json)
        if c is not None and weak is None:
            out.done.append(it.key)
            _rows(out, run_id, row, it, now, cost, bill, RecordStatus.DONE, AttemptOutcome.OK, None)
            t.keep(out.attempts[-1], it.custom_id)
            res = out.results[-1]
            res.model_served, res.provider, res.output = c.model, c.provider, c.content
            res.finish_reason, res.generation_id = c.finish_reason, c.generation_id
            res.prompt_tokens, res.completion_tokens = (
                c.usage.prompt_tokens,
                c.usage.completion_tokens,
            )
            out.attempts[-1].generation_id = c.generation_id
            out.attempts[-1].http_status = 200
            out.attempts[-1].served_model = c.model  # migration 12 (`calls` strips `:batch`)
            continue
        unrun = r is None or (c is None and r.error_type == "batch_expired")
        if unrun and status == "expired" and row.round == 1:
            why = ("batch_expired", "the batch expired before this item ran; resubmitted once")
            out.resubmit.append(it.key)
            outcome = AttemptOutcome.RETRY
        else:
            if c is not None and weak is not None:
                why = (weak, f"the batch's answer failed a quality check: {weak}")
            elif r is not None:
                why = (r.error_type, r.error or "failed")
            else:
                why = (f"batch_{status}", error or f"no result for this item (batch {status})")
            out.retry_sync.append(it.key)
            outcome = AttemptOutcome.FALLBACK
        _rows(out, run_id, row, it, now, cost, bill, RecordStatus.PENDING, outcome, why)
        t.keep(out.attempts[-1], it.custom_id)
        out.attempts[-1].served_model = c.model if c is not None else None  # migration 12
    return out


def _rows(
    out: Collected,
    run_id: str,
    row: BatchRow,
    it: BatchItem,
    now: datetime,
    cost: Decimal,
    bill: Bill,
    status: RecordStatus,
    outcome: AttemptOutcome,
    why: tuple[str, str] | None,
) -> None:
    # Started at the batch's intent: its cost belongs to the day it was reserved on.
    latency = int((now - row.intent_at).total_seconds() * 1000)
    out.attempts.append(
        AttemptRow(
            run_id, row.job_name, it.key, BATCH_ATTEMPT_NO, row.tier, row.model,
            row.intent_at, max(latency, 0), None, outcome, why[0] if why else None,
            why[1][:500] if why else None, cost, bill.source, None, None,
        )
    )  # fmt: skip
    out.results.append(
        ResultRow(
            row.job_name, it.key, run_id, it.line_no, status, it.task_type, it.complexity,
            row.tier, it.classifier, row.model, cost_usd=cost, cost_source=str(bill.source),
            latency_ms=max(latency, 0), attempts=1, error_type=why[0] if why else None,
            error_message=why[1][:500] if why else None, request_fp=it.fp, created_at=now,
        )
    )  # fmt: skip
