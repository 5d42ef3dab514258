"""A re-read of GET /key during a run forgets the batches still out (audit5).

At its start a run leaves room under the API key's `limit_remaining` for the batches still
out, which the key pays later (`Budget.unbilled`). It reads GET /key again every `key_check_s`
(other jobs or hosts may share the key: `watch_key`), and `Budget.lower_ceiling` then sets
the ceiling to what is settled plus what the key has left, without the batches: once another
host has spent more on the key than those batches' reservations, the ceiling it sets leaves
them no room, and the run spends what they will take; when they are billed, the key is over
its limit.

Now `Budget` keeps what it was told is still out (`Budget.out`) and leaves room for it at every
read.

Real CLI in subprocesses against a stand-in on a loopback port whose GET /key says the limit
less everything billed, and, from its second read on, less what another host spent meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from aiohttp import web
from subprocs import query, run_cli_async, until
from test_audit5_key_other_job_batch import MAX_TOKENS, KeyedBatchStandIn, _job


@dataclass
class SharedKey(KeyedBatchStandIn):
    """Another host spends `elsewhere` on the key just before GET /key is read the second
    time (the run's first re-read)."""

    elsewhere: Decimal = Decimal(0)
    reads: int = 0
    spent_elsewhere: Decimal = Decimal(0)

    async def chat(self, request: web.Request) -> web.Response:
        """Job b's calls are answered once the other host has spent (the run's second read):
        otherwise, on a quiet machine, job b spends more between its first read and its
        second (50 ms) than the key has room for, and no ceiling could stop that."""
        await until(lambda: self.reads >= 2, "the run's second GET /key")
        return await super().chat(request)

    async def key(self, request: web.Request) -> web.Response:
        self.reads += 1
        if self.reads == 2:
            self.spent_elsewhere = self.elsewhere
        self.limit -= self.spent_elsewhere  # the limit left to this database's jobs
        try:
            return await super().key(request)
        finally:
            self.limit += self.spent_elsewhere


async def test_a_key_re_read_mid_run_still_leaves_room_for_the_batches_out(
    tmp_path: Path, serve: Any
) -> None:
    """Before (b5d2829): see the assertion's message (the key billed past its limit)."""
    standin = SharedKey(
        polls_to_finish=1_000_000, completion_tokens=MAX_TOKENS, item_factor=Decimal(1),
        limit=Decimal(100),
    )  # fmt: skip
    url = await serve(standin)
    code, err = await run_cli_async("run", str(_job(tmp_path, url, "a", 20, batch=True)))
    assert code == 7, err  # its batch is out, not billed yet
    db = tmp_path / "results.duckdb"
    ((reserved,),) = query(db, "SELECT reserved_usd FROM batches")
    standin.limit = reserved * 10
    standin.elsewhere = reserved * Decimal("8.5")  # leaves room for the batch and half again
    standin.reads = 0
    job_b = _job(
        tmp_path, url, "b", 1_000, batch=False, concurrency=1, key_check_s=0.05,
        requests_per_minute=None,
    )  # fmt: skip
    code, err = await run_cli_async("run", str(job_b))
    assert code in (0, 3), err
    assert standin.reads >= 2, "the run never read GET /key again"
    spent_b = standin.total
    standin.polls_to_finish = 0  # the batch finishes; job a's next run collects it
    code, err = await run_cli_async("run", str(_job(tmp_path, url, "a", 20, batch=True)))
    assert code == 0, err
    used, limit = standin.total + standin.spent_elsewhere, standin.limit
    assert used <= limit, (
        f"key limit ${limit}: another host spent ${standin.spent_elsewhere}, job b "
        f"${spent_b} while job a's batch (reserved ${reserved}) was out, which then billed "
        f"${standin.total - spent_b}: ${used} in all"
    )
