"""The API key's limit leaves room for the batches still out, of this job only (audit5).

A batch cannot be cancelled: once submitted, its bill comes later, against the key's
`limit_remaining` as read now (batch-api.md §6; GET /key shows only what was billed,
openrouter-api.md §3). A run leaves room for its own job's batches still out
(`Lane.collect_earlier` → `Budget.unbilled`), but not for another job's batches in the same
database, on the same key: it may spend the whole of `limit_remaining`, and when the other
job's batch is billed the key is over its limit (the account guard the user set, and that the
run reads at every start and every `key_check_s`, does not hold).

Now the start leaves room for every job's batches still out in the database
(`Lane.collect_earlier`: `ResultStore.open_batches(job, others=True)`).

Real CLI in subprocesses against a stand-in on a loopback port that bills the sync calls at
once and the batch when it is finished, and whose GET /key says the limit less what it billed;
one DuckDB file for both jobs.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web
from batch_standin import MODEL, BatchStandIn
from factories import job_dict, texts, write_jsonl
from subprocs import KEY_ENV, query, run_cli_async

MAX_TOKENS = 64


@dataclass
class KeyedBatchStandIn(BatchStandIn):
    """GET /key: a limit, less everything billed so far (a batch only once it is finished)."""

    limit: Decimal = Decimal(0)

    async def key(self, _: web.Request) -> web.Response:
        left = self.limit - self.total
        data = {"limit": str(self.limit), "limit_remaining": str(left), "limit_reset": "daily"}
        return web.json_response({"data": data})


def _job(tmp_path: Path, url: str, name: str, n: int, *, batch: bool, **limits: Any) -> Path:
    """Job `name` on the shared database, its own input; one tier of MODEL."""
    records = texts(n, prefix=name)
    write_jsonl(tmp_path / f"{name}.jsonl", records)
    job = job_dict(
        tmp_path,
        name=name,
        input=str(tmp_path / f"{name}.jsonl"),
        quality=[],
        request={"max_tokens": MAX_TOKENS},
        endpoint={"base_url": url, "api_key_env": KEY_ENV},
        budget={"daily_usd": 10},
        limits=limits,
    )
    job["tiers"] = {"mid": {"models": [MODEL], "batch": batch, "stream": False}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path


async def test_another_job_s_batch_still_out_is_left_room_under_the_key(
    tmp_path: Path, serve: Any
) -> None:
    """Before (b5d2829): see the assertion's message (the key billed past its limit)."""
    # Every item generates max_tokens at the full price: the worst case the batch reserved.
    standin = KeyedBatchStandIn(
        polls_to_finish=1_000_000,
        completion_tokens=MAX_TOKENS,
        item_factor=Decimal(1),
        limit=Decimal(100),
    )
    url = await serve(standin)
    code, err = await run_cli_async("run", str(_job(tmp_path, url, "a", 20, batch=True)))
    assert code == 7, err  # its batch is out, not billed yet
    db = tmp_path / "results.duckdb"
    ((reserved,),) = query(db, "SELECT reserved_usd FROM batches")
    # The key can pay the batch and half as much again: that half is all job b may spend.
    standin.limit = reserved * Decimal("1.5")
    code, err = await run_cli_async("run", str(_job(tmp_path, url, "b", 400, batch=False)))
    assert code in (0, 3), err
    spent_b = standin.total
    standin.polls_to_finish = 0  # the batch finishes; job a's next run collects it
    code, err = await run_cli_async("run", str(_job(tmp_path, url, "a", 20, batch=True)))
    assert code == 0, err
    booked = query(db, "SELECT sum(cost_usd) FROM attempts")[0][0]
    assert booked >= standin.total  # (the books hold: it is the key's limit that breaks)
    assert standin.total <= standin.limit, (
        f"key limit ${standin.limit}: job b spent ${spent_b} while job a's batch "
        f"(reserved ${reserved}) was out, then that batch billed "
        f"${standin.total - spent_b}: ${standin.total} in all"
    )
