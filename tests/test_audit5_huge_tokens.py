"""An answer with an absurd token count poisons the journal: every later run fails (audit5).

An answer whose `usage` has token counts but no `cost` (older shapes, openrouter-api.md §7
pitfall 9; a gateway) is priced from its counts. A count no real call has (here
`"prompt_tokens": 1e20`, a JSON number a gateway's float arithmetic can write) passes
`parse_usage` (`int(...)`) and is booked: ~$1.6e14 a call, booked as the bill (it teaches
the model a ratio of 10^9 for the next 7 days, and fills today's cap of every job of the file),
while the count itself does not fit a BIGINT: the run dies ("unexpected error: Integer exceeds
64-bit range") before its records are final, and so does every run after it, each paying for
them again. A reported cost has a bound (`budget.MAX_BOOKABLE_USD`); token counts have none.

Now a count below 0 or above `client.parse.MAX_COUNT` (10^9) makes the answer malformed: booked
at its reservation, then at what GET /generation says.

Real CLI in a subprocess against a stand-in on a loopback port, real DuckDB file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from factories import standin_job, texts
from subprocs import query, run_cli_async
from test_billing_standin import MODEL, StandIn

N = 3


@dataclass
class HugeCount(StandIn):
    """Bills each call at list price; the answer's usage: a prompt count of 1e20, no cost."""

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        gid, _ = self._bill(body, "ok")
        usage = {"prompt_tokens": 1e20, "completion_tokens": 40, "total_tokens": 1e20}
        answer = {
            "id": gid,
            "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"content": "hola"}}],
            "usage": usage,
        }
        return web.json_response(answer, headers={"X-Generation-Id": gid})


async def test_an_absurd_token_count_does_not_stop_the_job_for_good(
    tmp_path: Path, serve: Any
) -> None:
    """Before (b5d2829): run 1 and run 2 exit 1 (Integer exceeds 64-bit range); 6 calls billed
    $0.007497 for 3 records, attempts booked $472,500,000,000,000.0045. (With 1e40 the
    price does not fit DECIMAL(38,12) either: the writer fails, and every later run's journal
    recovery fails on the same rows: "Conversion Error".)"""
    standin = HugeCount("ok")
    job = standin_job(
        tmp_path, await serve(standin), model=MODEL, cap=10, records=texts(N),
        limits={"reconcile_wait_s": 10, "max_attempts": 1},
    )  # fmt: skip
    first, _ = await run_cli_async("run", str(job))
    second, err = await run_cli_async("run", str(job))
    db = tmp_path / "results.duckdb"
    booked = query(db, "SELECT COALESCE(sum(cost_usd), 0) FROM attempts")[0][0]
    said = (
        f"exit codes {first}, {second}; {len(standin.billed)} calls billed ${standin.total} "
        f"for {N} records, booked ${booked}; run 2: {err.strip().splitlines()[-1][:300]}"
    )
    assert 1 not in (first, second), said
    assert len(standin.billed) == N, said  # a record is not paid for again by every run
    assert booked <= 10, said  # not a spend that never was (the cap is $10)
    assert booked >= standin.total, f"billed ${standin.total}, booked ${booked}"
