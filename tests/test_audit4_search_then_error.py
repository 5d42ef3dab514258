"""A search that ran before the provider failed is billed, and booked at $0 (audit4).

The web plugin (`:online`) searches before the model runs. When the provider then fails
without producing a token, OpenRouter answers with a real status (502 "Provider returned
error", openrouter-api.md §2.2, §8) and bills no tokens, but "auxiliary work such as web search
or PDF parsing may still be billed" (§2.6). The response still carries its `X-Generation-Id`
(§0: "on all endpoints"), and GET /generation tells the bill.

`runner.cost.failed_cost` books an error status as "not billed" ($0, `cost_source` none):
nothing asks /generation, and the reservation, which counted the search, is released, so an
outage on a searching tier both hides its search fees from the database and lets them run past
the cap.

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
from test_audit_web_search import SEARCH_USD, Searching
from test_billing_standin import MODEL

N = 4


@dataclass
class SearchThenDown(Searching):
    """Every `:online` call runs its search (billed `SEARCH_USD`), then its provider fails
    before the first token: HTTP 502 with the generation's id in `X-Generation-Id`;
    GET /generation reports the search fee."""

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        assert str(body["model"]).endswith(":online")
        gid = f"gen-{len(self.generations) + 1:06d}"
        self.billed.append(SEARCH_USD)
        self.generations[gid] = {"id": gid, "total_cost": float(SEARCH_USD), "is_byok": False}
        error = {"code": 502, "message": "Provider returned error", "metadata": {"raw": "down"}}
        return web.json_response({"error": error}, status=502, headers={"X-Generation-Id": gid})


async def test_a_search_billed_before_a_502_is_in_the_database(tmp_path: Path, serve: Any) -> None:
    """Before (14f3717): 12 calls (4 records x 3 attempts) billed $0.24 in search fees, the
    database $0.00 (12 attempts, http_status 502, cost_source 'none'); exit 6."""
    standin = SearchThenDown("ok")
    path = standin_job(
        tmp_path,
        await serve(standin),
        model=MODEL + ":online",
        cap=10,
        records=texts(N),
        limits={"concurrency": 1, "reconcile_wait_s": 30, "max_attempts": 3},
    )
    code, err = await run_cli_async("run", str(path))
    assert code == 6, err  # the provider was down: records left pending
    assert len(standin.billed) == N * 3
    db = tmp_path / "results.duckdb"
    booked, calls = query(db, "SELECT sum(cost_usd), count(*) FROM attempts")[0]
    assert calls == len(standin.billed)
    sources = query(db, "SELECT DISTINCT http_status, cost_source FROM attempts")
    assert booked >= standin.total, (
        f"bill ${standin.total} for {calls} calls vs database ${booked} ({sources})"
    )
