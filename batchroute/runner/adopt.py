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
from batchroute.client.batches import list_batches, result_ids
from batchroute.errors import UpstreamError
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
    A finished candidate without result lines (failed in validation) ran nothing: ignored,
    whoever's it is (resending its records cannot pay twice)."""
    try:
        found = await list_batches(client, row.intent_at - timedelta(seconds=60))
    except UpstreamError as exc:
        say(f"batch intent {row.batch_key}: cannot list batches ({exc}); kept")
        return "kept"
    claimed = await asyncio.to_thread(store.known_batch_ids)
    ours, unsure = {i.custom_id for i in row.items}, False
    for b in reversed(found):  # oldest first: intents are adopted in their order
        counts = b.get("request_counts") or {}
        if (
            b.get("id") in claimed
            or b.get("model") != row.model
            or not isinstance(counts, dict)
            or counts.get("total") != len(row.items)
        ):
            continue
        if str(b.get("status")) not in TERMINAL:
            unsure = True  # cannot tell whose it is before its results exist
            continue
        try:
            ids = await result_ids(client, str(b["id"]))
        except UpstreamError:
            unsure = True
            continue
        if ids and ids <= ours:
            row.batch_id, row.status = str(b["id"]), BatchStatus.SUBMITTED
            row.submitted_at = row.intent_at
            await asyncio.to_thread(store.save_batch, row)
            say(f"batch intent {row.batch_key}: adopted {row.batch_id}")
            return "adopted"
    if unsure or (now - row.intent_at).total_seconds() < ADOPT_AFTER_S:
        return "kept"
    row.status, row.error_message = BatchStatus.ABANDONED, "its POST never landed"
    await asyncio.to_thread(store.save_batch, row)
    say(f"batch intent {row.batch_key}: never submitted; its records go again")
    return "abandoned"
