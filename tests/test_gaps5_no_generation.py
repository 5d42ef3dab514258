"""A gateway without GET /generation: remembered, so later runs neither wait nor ask (gaps5).

An OpenAI-compatible gateway that answers with token counts but no `cost` has every answer
priced from the catalogue (`catalog`), and such answers are reconciled like reserved ones
(audit4): each run's end waited up to `reconcile_wait_s` for polls that could never answer,
and each start asked /generation again about every earlier call (up to 2,000 rows or 30 s).
Now a start that finds every earlier call unreconcilable probes a few ids the gateway itself
handed out, at least `PROOF_AGE` old (the real OpenRouter answers 404 only for a while right
after a generation, openrouter-api.md §4.2); if each answers 404 the base URL is remembered in
the database (`generation_gaps`, with what proved it) and later runs skip /generation. The
rows keep their catalogue price or reservation: booked at no less than before.

Real CLI in a subprocess against a stand-in on a loopback port, real DuckDB file.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
from aiohttp import web
from factories import standin_job, texts, write_jsonl
from subprocs import query, run_cli_async
from test_billing_standin import MODEL, StandIn


@dataclass
class Gateway(StandIn):
    """Bills at the catalogue's prices and answers with token counts only; it has no
    /generation: a GET there gets the framework's plain 404, as any unknown path (counted)."""

    asked: int = 0

    def _bill(self, body: dict[str, Any], outcome: str) -> tuple[str, dict[str, Any]]:
        gid, usage = super()._bill(body, outcome)
        tokens = {k: usage[k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
        return gid, tokens

    async def generation(self, request: web.Request) -> web.Response:
        self.asked += 1
        return web.Response(status=404, text="404: Not Found")


async def _run(tmp_path: Path, base_url: str, n: int) -> str:
    write_jsonl(tmp_path / "in.jsonl", texts(n))
    code, err = await asyncio.wait_for(run_cli_async("run", str(tmp_path / "job.yaml")), 300)
    assert code == 0, err
    return err


def _age(db: Path, hours: int) -> None:
    """Time passes: every call so far started `hours` earlier (the stand-in keeps no clock)."""
    con = duckdb.connect(str(db))
    try:
        con.execute(f"UPDATE attempts SET started_at = started_at - INTERVAL {hours} HOUR")
    finally:
        con.close()


async def test_a_gateway_without_generation_is_remembered_and_not_asked_again(
    tmp_path: Path, serve: Any
) -> None:
    """Before: run 3 asked /generation about run 1's and run 2's 8 calls at its start and
    polled its own 4 until its end. After: run 2's start proves the gap (404 on ids of calls
    two hours old) and remembers it; run 2's calls and all of run 3 ask nothing."""
    gw = Gateway("ok")
    base_url = await serve(gw)
    standin_job(
        tmp_path, base_url, model=MODEL, cap=10, records=texts(4),
        limits={"reconcile_wait_s": 2},
    )  # fmt: skip
    db = tmp_path / "results.duckdb"
    await _run(tmp_path, base_url, 4)
    assert gw.asked > 0  # run 1 polls: nothing proves yet that the gateway has no /generation
    _age(db, 2)
    err = await _run(tmp_path, base_url, 8)
    assert "no GET /generation" in err, err
    gap = query(db, "SELECT base_url, http_status, generation_id FROM generation_gaps")
    assert len(gap) == 1, gap
    assert gap[0][:2] == (base_url, 404), gap
    asked = gw.asked
    await _run(tmp_path, base_url, 12)
    assert gw.asked == asked, (gw.asked, asked)  # run 3: not one GET /generation
    booked = query(db, "SELECT sum(cost_usd), count(*) FROM attempts WHERE cost_source = 'catalog'")
    assert booked[0][1] == 12, booked  # every call kept its catalogue price
    assert booked[0][0] >= gw.total, (booked, gw.total)


async def test_recent_404s_prove_nothing(tmp_path: Path, serve: Any) -> None:
    """The same gateway, runs minutes apart: OpenRouter too answers 404 right after a
    generation, so nothing is remembered and each start asks again."""
    gw = Gateway("ok")
    base_url = await serve(gw)
    standin_job(
        tmp_path, base_url, model=MODEL, cap=10, records=texts(4),
        limits={"reconcile_wait_s": 0},
    )  # fmt: skip
    db = tmp_path / "results.duckdb"
    await _run(tmp_path, base_url, 4)
    await _run(tmp_path, base_url, 8)
    asked = gw.asked
    assert asked >= 4, asked  # run 2's start asked about run 1's calls
    await _run(tmp_path, base_url, 8)
    assert gw.asked >= asked + 8, (gw.asked, asked)
    assert query(db, "SELECT count(*) FROM generation_gaps") == [(0,)]
