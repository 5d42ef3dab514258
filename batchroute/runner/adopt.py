"""Adopting an intent: the batch its POST created (kill -9 or a lost 202 between the POST and
the write of the batch id), found in the workspace's `GET /batches`.

The list is the workspace's, not the job's: another job may have a batch of the same model and
size in it (two cron jobs sending full 5,000-request batches, say). Adopting that one would book
its cost here, send our records again, and leave our own batch, billed, in no database. So a
candidate is ours only when its result lines carry our custom_ids (a hash of job and key):
it is adopted once finished, and the intent is kept until then.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta

from batchroute.client import OpenRouterClient
from batchroute.client.batches import get_batch, list_batches, result_ids
from batchroute.errors import UpstreamError
from batchroute.runner.batching import batch_cost
from batchroute.runner.collect import TERMINAL
from batchroute.store import ResultStore
from batchroute.types import BatchRow, BatchStatus

ADOPT_AFTER_S = 120.0  # an intent younger than this may be a batch the list does not show yet


async def adopt(
    client: OpenRouterClient, store: ResultStore, row: BatchRow, now: datetime,
    say: Callable[[str], None],
) -> str:  # fmt: skip
    """An intent (its POST's outcome unknown): find the batch it created ("adopted"), else
    give its records back once the list had time to show it ("abandoned"), else "kept".
    A finished candidate without result lines cannot be told apart: unbilled (failed in
    validation: it ran nothing), it is ignored; billed (an expired batch serving no lines),
    it is adopted when nothing better shows, as booking a bill that may be another job's
    overcounts, while leaving a paid batch of ours in no database would undercount."""
    try:
        found = await list_batches(client, row.intent_at - timedelta(seconds=60))
    except UpstreamError as exc:
        say(f"batch intent {row.batch_key}: cannot list batches ({exc}); kept")
        return "kept"
    claimed = await asyncio.to_thread(store.known_batch_ids)
    ours, unsure, blind = {i.custom_id for i in row.items}, False, None
    for b in reversed(found):  # oldest first: intents are adopted in their order
        counts = b.get("request_counts") or {}
        total = counts.get("total") if isinstance(counts, dict) else None
        done = str(b.get("status")) in TERMINAL
        # The model and size only narrow the search; the custom_ids prove it. The list may
        # echo the model's other form (base or `:batch`, batch-api.md §7), and an
        # OpenAI-shaped batch counts `total: 0` while it validates.
        same = _base(b.get("model")) == _base(row.model)
        if b.get("id") in claimed or (total != len(row.items) and (done or total)):
            continue
        if not done:
            unsure = unsure or same  # cannot tell whose it is before its results exist
            continue
        try:
            ids = await result_ids(client, str(b["id"]))
        except UpstreamError:
            unsure = True
            continue
        if ids and ids <= ours:
            return await _take(store, row, str(b["id"]), say)
        if not ids and blind is None and same:
            billed = await _billed(client, str(b["id"]))
            if billed is None:  # its bill unknown now: neither adopted nor given up on
                unsure = True
            elif billed:
                blind = str(b["id"])
    if unsure or (now - row.intent_at).total_seconds() < ADOPT_AFTER_S:
        return "kept"
    if blind is not None:  # billed, whose unknown: booked here rather than in no database
        return await _take(store, row, blind, say)
    row.status, row.error_message = BatchStatus.ABANDONED, "its POST never landed"
    await asyncio.to_thread(store.save_batch, row)
    say(f"batch intent {row.batch_key}: never submitted; its records go again")
    return "abandoned"


def _base(model: object) -> str:
    """A model id without its `:batch` suffix: the two forms the Batch API takes."""
    return str(model).removesuffix(":batch")


async def _billed(client: OpenRouterClient, batch_id: str) -> bool | None:
    """The finished batch reports a cost above $0, or one it cannot state (BYOK); None when
    it cannot be asked now (a failed GET is no "not billed": a paid batch would be abandoned
    and its records paid again, the batch in no database)."""
    try:
        doc = await get_batch(client, batch_id)
    except UpstreamError:
        return None
    cost, unknown = batch_cost(doc.get("usage") if doc is not None else None)
    return unknown or (cost is not None and cost > 0)


async def _take(
    store: ResultStore, row: BatchRow, batch_id: str, say: Callable[[str], None]
) -> str:
    row.batch_id, row.status, row.submitted_at = batch_id, BatchStatus.SUBMITTED, row.intent_at
    await asyncio.to_thread(store.save_batch, row)
    say(f"batch intent {row.batch_key}: adopted {row.batch_id}")
    return "adopted"
