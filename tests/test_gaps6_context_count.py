"""A token count above the model's context length is no bill: booked at the reservation,
then at what GET /generation says (gaps6).

Stop 24 made a count above 10^9 malformed (audit5). A count below that but above the context
window of every model that may have served the call (here 500,000,000 prompt tokens on a
128,000-token model) cannot be a real call's either, yet it was priced from its counts as the
bill (`cost_source = 'catalog'`): $787.50 for a call the provider billed $0.0012. /generation
corrected the row, but the ratio the answer had taught (~4x10^5) stayed in force: the other
records of the night no longer fitted the $10 cap and waited for tomorrow. The money rules
allow the overcount (never under), but a few absurd answers cost a night. Now such an answer
is booked like a malformed one: at its reservation (`reserved`), which GET /generation then
corrects; nothing is learnt from it.

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

N = 6
ABSURD = 500_000_000  # under client.parse.MAX_COUNT (10^9), far over the 128,000 context


@dataclass
class OverContext(StandIn):
    """Bills each call at list price; the first answer's usage counts ABSURD prompt tokens,
    with no cost (an older shape, or a gateway); the others are true counts without cost."""

    answered: int = 0

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        gid, usage = self._bill(body, "ok")
        self.answered += 1
        prompt = ABSURD if self.answered == 1 else usage["prompt_tokens"]
        counts = {"prompt_tokens": prompt, "completion_tokens": usage["completion_tokens"]}
        answer = {
            "id": gid,
            "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"content": "hola"}}],
            "usage": {**counts, "total_tokens": prompt + usage["completion_tokens"]},
        }
        return web.json_response(answer, headers={"X-Generation-Id": gid})


async def test_a_count_above_the_context_length_does_not_spend_the_night(
    tmp_path: Path, serve: Any
) -> None:
    """Before (4fb9e65): 1 call billed ($0.0012), booked $787.50 (then corrected); exit 3,
    5 records pending ("daily budget reached"). After: every record done, the absurd answer
    booked at its /generation figure, the books at least the bill and not far above it."""
    standin = OverContext("ok")
    job = standin_job(
        tmp_path, await serve(standin), model=MODEL, cap=10, records=texts(N),
        limits={"reconcile_wait_s": 10, "concurrency": 1},
    )  # fmt: skip
    code, err = await run_cli_async("run", str(job))
    db = tmp_path / "results.duckdb"
    booked = query(db, "SELECT COALESCE(sum(cost_usd), 0) FROM attempts")[0][0]
    said = f"exit {code}; {len(standin.billed)} calls billed ${standin.total}, booked ${booked}"
    assert code == 0, f"{said}; {err[-600:]}"
    assert query(db, "SELECT count(*) FROM results WHERE status = 'done'") == [(N,)], said
    assert booked >= standin.total, said
    assert booked <= standin.total * 2, said  # the absurd count is not what was booked
    first = query(db, "SELECT cost_source FROM attempts ORDER BY started_at LIMIT 1")
    assert first == [("generation",)], first  # reserved, then corrected by /generation
