"""What /generation says of a native fallback's call is learnt under the model that served,
in the run as at the next start; a fix fills `attempts.served_model` (gaps6).

Migration 12 (gaps5) made the start's seed learn a fallback's bill under the model that served
(`served_model`, against `served_listed_usd`). The run's own Reconciler still learnt a
/generation figure only under the model asked for: a `mid` call (models [CHEAP, DEAR]) served
by DEAR, priced from its tokens, then found by /generation at 4x DEAR's list, taught CHEAP
alone; the record's escalation to `premium` (DEAR alone) was reserved at DEAR's list price and
overran the cap. And a fix made at a start (a call killed in flight: no answer, no
`served_model`) left `served_model` empty though /generation names the model.

Real parts: the runner in-process on an injected clock (a backoff's wait is handed to the
test, which lets it end once the first call's fix is in the journal), a stand-in on a loopback
port, a real DuckDB file; then the real CLI in subprocesses for the start's fix.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from factories import texts, write_jsonl
from subprocs import kill_run_when, query, rerun_after_kill, until
from test_billing_standin import _wait
from test_money4_served_ratio import CHEAP, DEAR, FallsBack, _job

from batchroute.runner import run_job_async
from batchroute.runner.reconcile import Reconciler
from batchroute.runner.work import RunOptions
from batchroute.spec import load_spec


@dataclass
class ServedByDear(FallsBack):
    """Every call is served by DEAR and billed 4x its list; the answer's usage has token
    counts but no cost (priced from its tokens, then reconciled). A call naming `models`
    answers empty (a quality failure: its record climbs to `premium`); DEAR's first call of
    its own is refused with a 429 and `Retry-After: 2`; with `hold`, calls wait for
    `release` (killed in flight)."""

    refused: int = 0
    hold: bool = False
    held: int = 0

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        if not body.get("models") and not self.refused and not self.hold:
            self.refused += 1
            err = {"code": 429, "message": "Rate limit exceeded"}
            return web.json_response({"error": err}, status=429, headers={"Retry-After": "2"})
        gid, usage = self._bill(body, "ok")
        del usage["cost"], usage["cost_details"]
        self.generations[gid]["model"] = DEAR  # GET /generation names it (openrouter-api §4.2)
        if self.hold:  # the status and the id go out at once, then nothing (openrouter-api
            resp = web.StreamResponse(headers={"X-Generation-Id": gid})  # §2.3's keep-alive)
            await resp.prepare(request)
            await resp.write(b"\n")
            self.held += 1
            await _wait(self.release)
            return resp
        content = "" if body.get("models") else "bonjour"
        doc = {
            "id": gid,
            "model": DEAR,
            "object": "chat.completion",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"content": content}}],
            "usage": usage,
        }
        return web.json_response(doc, headers={"X-Generation-Id": gid})


TIERS = {
    "mid": {"models": [CHEAP, DEAR], "native_fallback": True, "stream": False},
    "premium": {"models": [DEAR], "stream": False},
}


def _count_fixes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many /generation fixes the run's Reconciler applied (it learns, then books the fix,
    in one synchronous step). Counted in-process: the journal file that carries the fix is
    handed to the writer and deleted within 0.25 s, which a loaded machine can sleep through
    (the review)."""
    applied = [0]
    apply = Reconciler._apply

    def counted(self: Reconciler, *args: Any) -> None:
        apply(self, *args)
        applied[0] += 1

    monkeypatch.setattr(Reconciler, "_apply", counted)
    return applied


async def test_the_runs_reconciler_learns_a_fallbacks_bill_under_the_model_that_served(
    tmp_path: Path, serve: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: the premium retry was reserved at DEAR's list price, fitted, and was billed
    ~2.8x that: the bill past the cap. After: reserved at the ratio /generation taught DEAR,
    it does not fit; the record waits (pending), the bill under the cap."""
    standin = ServedByDear("ok")
    base_url = await serve(standin)
    probe = ServedByDear("ok")
    probe._bill({"messages": _messages(texts(1)[0])}, "ok")
    (bill,) = probe.billed  # each call of the record bills this
    cap = bill + bill * Decimal("0.8")
    job = _job(tmp_path, base_url, cap, 1, tiers=TIERS, quality=["empty"],
               routing={"translation": "mid"})  # fmt: skip
    db = tmp_path / "results.duckdb"
    clock = [datetime(2026, 12, 7, 21, 0, tzinfo=UTC)]
    applied = _count_fixes(monkeypatch)

    async def sleep(s: float) -> None:
        clock[0] += timedelta(seconds=s)
        if s >= 2:  # the 429's backoff: it ends once the first call's bill is known
            await until(lambda: applied[0] >= 1, "the first call's /generation fix")
        await asyncio.sleep(0)

    opts = RunOptions(
        api_key="sk-or-v1-test", base_url=base_url, db_path=db, handle_signals=False,
        quiet=True, sleep=sleep, jitter_seed=0, log=lambda _l: None, now=lambda: clock[0],
    )  # fmt: skip
    await run_job_async(load_spec(job), opts)
    assert standin.refused == 1  # the premium call did come after the fix
    assert standin.total <= cap, (standin.total, cap, len(standin.billed))
    assert query(db, "SELECT status FROM results") == [("pending",)]


def _messages(rec: dict[str, Any]) -> list[dict[str, str]]:
    user = f"Translate into {rec['target_lang']}:\n\n{rec['text']}"
    return [{"role": "system", "content": "You translate."}, {"role": "user", "content": user}]


async def test_a_fix_at_the_start_fills_the_model_that_served(tmp_path: Path, serve: Any) -> None:
    """A call killed in flight (no answer: `served_model` NULL) fixed by the next start from
    /generation, which names DEAR. Before: `served_model` stayed NULL (`calls` credited the
    model asked for, the seed could not learn under DEAR)."""
    standin = ServedByDear("ok", hold=True)
    write_jsonl(tmp_path / "in.jsonl", texts(1))
    job = _job(tmp_path, await serve(standin), Decimal(5), 1, tiers=TIERS, quality=[],
               routing={"translation": "mid"})  # fmt: skip

    async def held() -> None:
        await until(lambda: standin.held == 1, "the call in flight")

    await kill_run_when(job, held)
    standin.hold = False
    standin.refused = 1
    standin.release.set()
    code, err = await rerun_after_kill(job)
    assert code == 0, err
    db = tmp_path / "results.duckdb"
    rows = query(
        db, "SELECT model, served_model, cost_source FROM attempts WHERE outcome = 'killed'"
    )
    assert rows == [(CHEAP, DEAR, "generation")], rows
