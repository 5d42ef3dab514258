"""A batch polled, and a terminal batch read and settled onto its items (the batch lane's
collection, `runner/lane.py`): its result lines, its bill split onto its items, and the rows
of every item (`runner/collect.py`), written in one transaction with the batch's status."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from batchroute.budget import USD_PLACES
from batchroute.client import OpenRouterClient
from batchroute.client.batches import get_batch, list_batches, terminal_results
from batchroute.errors import UpstreamError
from batchroute.plan import RunPlan
from batchroute.runner import batching as B
from batchroute.runner.collect import GONE, Collected, Terms, collect_rows
from batchroute.types import BatchRow

GONE_AFTER_S = 3_600.0  # a 404 this long after the submit is no replication lag (~30 s)


async def poll(
    client: OpenRouterClient, row: BatchRow, now: datetime, say: Callable[[str], None]
) -> dict[str, Any] | None:
    """The batch object; None while it is not visible (a 404 just after the submit is
    replication lag, not a lost batch) or the API cannot be reached."""
    assert row.batch_id is not None
    try:
        doc = await get_batch(client, row.batch_id)
    except UpstreamError as exc:
        say(f"batch {row.batch_id}: poll failed ({exc}); trying again later")
        return None
    since = now - (row.submitted_at or row.intent_at)
    if doc is None and since.total_seconds() > GONE_AFTER_S and not await _listed(client, row):
        # deleted by hand, or the key is another workspace's: it may have run (billed), so
        # it is booked at its reservation and its records go again; polled forever before
        why = f"GET answered 404 for {since} after the submit: deleted, or another workspace"
        return {"status": GONE, "usage": None, "results": None, "error": {"message": why}}
    return doc


async def _listed(client: OpenRouterClient, row: BatchRow) -> bool:
    """Whether the workspace's list still shows the batch a GET answered 404 for (or cannot
    be read now): one transient 404 is no proof it is gone, and taking it for one pays the
    records twice while the batch runs on and bills (audit5's theory, reproduced)."""
    since = (row.submitted_at or row.intent_at).replace(tzinfo=None) - timedelta(seconds=60)
    try:
        found = await list_batches(client, since)
    except UpstreamError:
        return True  # unknown: polled again later
    return any(b.get("id") == row.batch_id for b in found)


async def read(
    client: OpenRouterClient, plan: RunPlan, row: BatchRow, doc: dict[str, Any], *,
    now: datetime, run_id: str,
) -> tuple[B.Bill, Collected] | None:  # fmt: skip
    """A terminal batch's bill and rows (booked to `run_id`, the run collecting it); None
    when its answers cannot be read now (a results page failed: read at a later poll)."""
    assert row.batch_id is not None
    status = str(doc.get("status"))
    raw: Any = None
    if status != "failed":
        raw = await terminal_results(client, row.batch_id, doc)
        if raw is None:
            return None
    items = B.read_items(raw if isinstance(raw, list) else [], row.model)
    cost, byok_unknown = B.batch_cost(doc.get("usage"))
    counts = doc.get("request_counts")
    ran = counts.get("completed") if isinstance(counts, dict) else None
    if cost is None and status == "failed" and not items and not byok_unknown and not ran:
        cost = Decimal(0)  # failed in validation (results null, none completed): none ran
    ids = [i.custom_id for i in row.items]
    worst = B.worst_items(plan, row.model, [(i.custom_id, i.prompt_bound) for i in row.items])
    bill = B.settle(items, ids, cost, row.reserved_usd, unknown=byok_unknown, worst=worst)
    err = doc.get("error")
    message = str(err.get("message")) if isinstance(err, dict) else None
    spec = plan.spec
    # Each item's share of the reservation, split as `settle` splits one: by its worst case.
    weights = {cid: int(w / USD_PLACES) for cid, w in worst.items()}
    terms = Terms(B.apportion(row.reserved_usd, weights), worst)
    out = collect_rows(
        row, status, items, bill, now=now, error=message, run_id=run_id,
        checks=spec.quality, wants_json=spec.request.wants_json(), terms=terms,
    )  # fmt: skip
    row.settled_usd, row.finished_at, row.error_message = bill.total, now, message
    return bill, out
