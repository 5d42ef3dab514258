"""The simulated Batch API's memory: submitted batches, their timeline, and what they bill.

No HTTP and no randomness here: a batch's fate (which items fail, how many tokens each answer
has, whether the batch fails validation or expires) is drawn once at submission
(`batch_submit.py`); this module only tells, for a given time on the simulator's clock, what
status the batch is in, which items are done, and which of them are now billed. The store lives
in the app's `SimState`, not in a connection, so it outlives any client.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from batchroute.simulator import responses as R

TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
"""Statuses after which nothing changes (and DELETE is allowed)."""

EXPIRED_ERROR = {
    "message": "Batch expired before this request was processed.",
    "type": "batch_expired",
    "param": None,
}
"""The `error` of an item left unfinished when its batch expired."""


@dataclass(slots=True)
class BatchItem:
    """One request of a batch and its precomputed outcome.

    `done_at` is seconds after submission when its result exists; `result` is its result line
    (`{id, custom_id, response, error}`); `bill` what it is billed when done (None: nothing).
    """

    custom_id: str
    line: int  # 1-based position in the submitted `requests`
    done_at: float
    result: dict[str, Any]
    bill: R.Bill | None
    model: str
    gid: str | None  # the answer's generation id (None: the item failed)
    prompt_tokens: int
    completion_tokens: int
    billed: bool = False

    @property
    def ok(self) -> bool:
        return self.result["error"] is None


@dataclass(slots=True)
class Batch:
    """One submitted batch. Times are absolute (`created_at`) or seconds after it."""

    id: str
    endpoint: str
    model: str
    completion_window: str
    created_at: float
    items: list[BatchItem]  # sorted by done_at: the order results come back in
    validating_s: float
    in_progress_s: float
    finalizing_s: float
    not_found_s: float
    fail_message: str | None = None  # whole-batch validation failure (after the 202)
    expire_at: float | None = None  # seconds after submission; None: never expires
    deleted: bool = False
    _billed_upto: int = field(default=0, repr=False)

    @property
    def end(self) -> float:
        """Seconds after submission at which the batch would complete."""
        return self.validating_s + self.in_progress_s + self.finalizing_s

    def visible(self, now: float) -> bool:
        """False during the read-after-write lag just after submission, and once deleted."""
        return not self.deleted and now - self.created_at >= self.not_found_s

    def expires(self) -> bool:
        return self.expire_at is not None and self.expire_at < self.end

    def status(self, now: float) -> str:
        t = now - self.created_at
        if self.fail_message is not None:
            return "validating" if t < self.validating_s else "failed"
        if self.expire_at is not None and self.expires() and t >= self.expire_at:
            return "expired"
        if t < self.validating_s:
            return "validating"
        if t < self.validating_s + self.in_progress_s:
            return "in_progress"
        return "finalizing" if t < self.end else "completed"

    def finalized_at(self, now: float) -> float | None:
        """Absolute time the batch reached its terminal status (None: not yet)."""
        status = self.status(now)
        if status not in TERMINAL:
            return None
        if status == "failed":
            return self.created_at + self.validating_s
        if status == "expired":
            assert self.expire_at is not None
            return self.created_at + self.expire_at
        return self.created_at + self.end

    def done_items(self, now: float) -> list[BatchItem]:
        """Items whose result exists at `now` (never any of a batch that failed validation)."""
        if self.fail_message is not None:
            return []
        t = now - self.created_at
        if self.expires():
            assert self.expire_at is not None
            t = min(t, self.expire_at)
        return [i for i in self.items if i.done_at <= t]

    def counts(self, now: float) -> dict[str, int]:
        """`request_counts`: at a terminal status completed + failed == total."""
        total = len(self.items)
        status = self.status(now)
        if status == "failed":
            return {"total": total, "completed": 0, "failed": total}
        done = self.done_items(now)
        ok = sum(1 for i in done if i.ok)
        failed = len(done) - ok
        if status == "expired":
            failed = total - ok
        return {"total": total, "completed": ok, "failed": failed}

    def results(self, now: float) -> list[dict[str, Any]] | None:
        """Result lines of a terminal batch (None before, and for a failed batch); an expired
        batch's unfinished items come back with the `batch_expired` error."""
        status = self.status(now)
        if status not in TERMINAL or status == "failed":
            return None
        done = self.done_items(now)
        lines = [i.result for i in done]
        if status == "expired":
            finished = {i.custom_id for i in done}
            lines += [
                {
                    "id": i.result["id"],
                    "custom_id": i.custom_id,
                    "response": None,
                    "error": dict(EXPIRED_ERROR),
                }
                for i in self.items
                if i.custom_id not in finished
            ]
        return lines

    def usage(self, now: float) -> dict[str, Any] | None:
        """The batch-level `usage` once terminal: the sum over its billed items."""
        status = self.status(now)
        if status not in TERMINAL or status == "failed":
            return None
        billed = [i for i in self.done_items(now) if i.bill is not None]
        prompt = sum(i.prompt_tokens for i in billed)
        completion = sum(i.completion_tokens for i in billed)
        cost = sum((i.bill.cost for i in billed if i.bill), Decimal(0))
        upstream = sum((i.bill.upstream.total for i in billed if i.bill), Decimal(0))
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "cost": float(R.quantize_cost(cost)),
            "is_byok": any(i.bill.byok for i in billed if i.bill),
            "cost_details": {"upstream_inference_cost": float(R.quantize_cost(upstream))},
            "service_tier": "batch",
        }

    def newly_billed(self, now: float) -> list[BatchItem]:
        """Items done by `now` and not billed before (each item is billed once)."""
        done = self.done_items(now)
        fresh = [i for i in done[self._billed_upto :] if i.bill is not None and not i.billed]
        self._billed_upto = max(self._billed_upto, len(done))
        for item in fresh:
            item.billed = True
        return fresh


@dataclass(slots=True)
class BatchStore:
    """Every batch submitted to one simulator app, newest last."""

    batches: dict[str, Batch] = field(default_factory=dict)
    billed: list[tuple[str, BatchItem]] = field(default_factory=list)  # (batch id, item)

    def add(self, batch: Batch) -> None:
        self.batches[batch.id] = batch

    def settle(self, now: float) -> list[BatchItem]:
        """Bill every item that finished by `now` and was not billed yet; returns them."""
        fresh: list[BatchItem] = []
        for batch in self.batches.values():
            items = batch.newly_billed(now)
            self.billed += [(batch.id, i) for i in items]
            fresh += items
        return fresh

    def ledger(self) -> list[dict[str, Any]]:
        """One entry per billed batch item (amounts as exact decimal strings)."""
        return [
            {
                "batch_id": bid,
                "custom_id": i.custom_id,
                "id": i.gid,
                "model": i.model,
                "cost_usd": format(i.bill.total, "f") if i.bill else "0",
                "fee_usd": format(i.bill.cost, "f") if i.bill else "0",
                "upstream_usd": format(i.bill.byok_upstream, "f") if i.bill else "0",
                "prompt_tokens": i.prompt_tokens,
                "completion_tokens": i.completion_tokens,
            }
            for bid, i in self.billed
        ]
