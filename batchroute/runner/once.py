"""An expired batch's unanswered items are resubmitted once: the mark, read back from the
database, so that a kill between collecting the batch and resubmitting cannot reset it.

`kill_point` is a test hook: with `BATCHROUTE_TEST_KILL_AT` naming the point, the process kills
itself (SIGKILL) there, a moment no signal from outside can hit reliably. Unset (always, outside
the tests), it does nothing.
"""

from __future__ import annotations

import asyncio
import os
import signal

from batchroute.spec import JobSpec
from batchroute.store import ResultStore

KILL_ENV = "BATCHROUTE_TEST_KILL_AT"


def kill_point(name: str) -> None:
    """Die at once (SIGKILL, as `kill -9`) if the tests asked for this point; else nothing."""
    if os.environ.get(KILL_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


async def read_marks(
    store: ResultStore, spec: JobSpec, resubmit: set[str], retry_sync: set[str]
) -> None:
    """Add to the lane's marks what the database says: pending records an expired batch left
    unanswered go to `resubmit` (the round-2 batch) unless a round-2 batch already held them,
    in which case their once is spent; those and the records whose batch item failed go to
    `retry_sync` (the tier's sync chain). Kept only in memory, the marks were lost to a kill
    between the collect (committed) and the next step, and the rerun batched those records as
    new: round 1 again."""
    if not any(t.batch for t in spec.tiers.values()):  # no batch tier reads the marks
        return
    again, sync = await asyncio.to_thread(store.once_marks, spec.name)
    resubmit.update(again)
    retry_sync.update(sync)
