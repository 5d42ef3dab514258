"""A record killed mid-escalation goes on from the tier it had climbed to (gaps6).

Each record is routed to `cheap`; CHEAP answers empty (billed, a quality failure), so the
record climbs to `premium`; DEAR's calls are held, and the run is killed -9 with them in
flight. Before (4fb9e65): the next run routed every such record to `cheap` again and paid
CHEAP a second time for the answer it had already paid for and rejected (here 4 more CHEAP
calls for 4 records), then climbed again. The attempts say how far each record got (an
`escalate` attempt after a quality failure in `cheap`), so the next run starts it in
`premium`, with the escalation it has used counted against `max_escalations`.

Real CLI in subprocesses (the run killed -9), a stand-in on a loopback port, a real DuckDB file.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from subprocs import kill_run_when, query, rerun_after_kill, until
from test_billing_standin import _wait
from test_money4_served_ratio import CHEAP, DEAR, FallsBack, _job

N = 4


@dataclass
class Climbs(FallsBack):
    """CHEAP (listed at a tenth of DEAR's prices) answers empty at once; DEAR's answers wait
    for `release`. Both bill each call when it arrives (the generation runs whatever the
    client does next)."""

    asked: Counter[str] = field(default_factory=Counter)
    held: int = 0
    dear_empty: bool = False  # DEAR's answers are empty too

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        model = body["model"]
        self.asked[model] += 1
        gid, usage = self._bill(body, "ok")
        if model == DEAR:
            self.held += 1
            await _wait(self.release)
        content = "" if model == CHEAP or self.dear_empty else "bonjour"
        doc = {
            "id": gid,
            "model": model,
            "object": "chat.completion",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"content": content}}],
            "usage": usage,
        }
        return web.json_response(doc, headers={"X-Generation-Id": gid})


TIERS = {
    "cheap": {"models": [CHEAP], "stream": False},
    "premium": {"models": [DEAR], "stream": False},
}


def _climb_job(tmp_path: Path, base_url: str, **kw: Any) -> Path:
    job = _job(
        tmp_path, base_url, Decimal(5), N, tiers=TIERS, quality=["empty"],
        routing={"translation": "cheap"}, **kw,
    )  # fmt: skip
    doc = job.read_text().replace("concurrency: 1", f"concurrency: {N}")
    job.write_text(doc)
    return job


async def test_a_record_killed_mid_escalation_does_not_pay_its_cheap_tier_again(
    tmp_path: Path, serve: Any
) -> None:
    """Before: run 2 asked CHEAP 4 more times (8 in all, for 4 records)."""
    standin = Climbs("ok")
    job = _climb_job(tmp_path, await serve(standin))

    async def held() -> None:
        await until(lambda: standin.held == N, "every record's premium call in flight")

    await kill_run_when(job, held)
    assert standin.asked == {CHEAP: N, DEAR: N}, standin.asked
    standin.release.set()  # the provider answers (and has billed) the killed calls
    code, err = await rerun_after_kill(job)
    assert code == 0, err
    db = tmp_path / "results.duckdb"
    assert query(db, "SELECT status, tier, count(*) FROM results GROUP BY ALL") == [
        ("done", "premium", N)
    ]
    assert standin.asked[CHEAP] == N, (standin.asked, err)  # never paid twice
    assert standin.asked[DEAR] == 2 * N  # the killed calls' answers were lost: asked again
    booked = query(db, "SELECT sum(cost_usd) FROM attempts")[0][0]
    assert booked >= standin.total, (booked, standin.total)
    ((rows_total,),) = query(db, "SELECT sum(cost_usd) FROM results")
    assert rows_total == booked
    # The escalation is counted once: run 1's, not again in run 2.
    assert query(db, "SELECT DISTINCT escalations FROM results") == [(1,)]


async def test_the_escalations_used_count_against_max_escalations(
    tmp_path: Path, serve: Any
) -> None:
    """Three tiers (cheap CHEAP, mid DEAR, top CHEAP) and `max_escalations: 1`, used up by
    run 1's climb to `mid`. In run 2 DEAR answers empty too: the record may not climb to
    `top` (it fails), and CHEAP is never asked again."""
    standin = Climbs("ok")
    tiers = {"cheap": TIERS["cheap"], "mid": TIERS["premium"], "top": TIERS["cheap"]}
    job = _job(
        tmp_path, await serve(standin), Decimal(5), N, tiers=tiers, quality=["empty"],
        routing={"translation": "cheap"},
    )  # fmt: skip
    doc = job.read_text().replace("concurrency: 1", f"concurrency: {N}")
    job.write_text(doc.replace("limits:\n", "limits:\n  max_escalations: 1\n"))

    async def held() -> None:
        await until(lambda: standin.held == N, "every record's mid call in flight")

    await kill_run_when(job, held)
    standin.dear_empty = True
    standin.release.set()
    code, err = await rerun_after_kill(job)
    assert code == 4, err  # finished, records failed
    db = tmp_path / "results.duckdb"
    assert standin.asked[CHEAP] == N, (standin.asked, err)  # neither cheap nor top again
    assert query(db, "SELECT status, tier, count(*) FROM results GROUP BY ALL") == [
        ("failed", "mid", N)
    ]


def test_resume_tier_goes_past_the_furthest_tier_climbed_on_the_path() -> None:
    from batchroute.runner.policy import resume_tier

    path = ("budget", "mid", "standard")
    assert resume_tier(path, ()) == ("budget", 0)
    assert resume_tier(path, ("budget",)) == ("mid", 1)
    assert resume_tier(path, ("mid", "budget")) == ("standard", 2)
    assert resume_tier(path, ("premium",)) == ("budget", 0)  # not on its path: routed tier
    assert resume_tier(path, ("standard",)) == ("budget", 0)  # the path's end: nowhere to go
    assert resume_tier(("mid", "standard"), ("budget",)) == ("mid", 0)  # routed above it now
