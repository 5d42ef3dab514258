"""A ratio learnt from a call another model served, keyed by model (money4).

Learnt ratios are keyed by the model a call asked for. With native fallback (`models: [A,
B]`) the call may be served, and billed, by B. Two questions:

- Can a ratio learnt or applied on the wrong model make a reservation *of that tier* too
  small? No: a call that any of its `models` may serve is reserved at its list-price worst case
  over all of them × the largest ratio of any of them, and the ratio learnt on A from B's bill
  is measured against that same worst case (`test_a_native_fallback_tier_holds_its_cap`,
  passes on 14f3717 too; it fails, $0.020088 against $0.02, if the ratio is applied to the
  asked model's list price instead of the worst case it was measured against).
- But what B's bill taught stayed on A: a later call that only B may serve (another tier, an
  escalation) was reserved at B's list price and overran (`test_an_escalation_to_the_model_that
  _served_is_reserved_at_its_ratio`, fails on 14f3717). Now an answer served by another model
  of the call's `models` teaches that model too, measured against its own list price.

Real CLI in a subprocess against a stand-in on a loopback port, real DuckDB file.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import yaml
from aiohttp import web
from factories import job_dict, texts, write_jsonl
from subprocs import KEY_ENV, query, run_cli_async
from test_audit_cost_above import PricedAbove
from test_billing_standin import COMPLETION_PRICE, MODEL, PROMPT_PRICE

DEAR = MODEL
CHEAP = "example/cheap"


@dataclass
class FallsBack(PricedAbove):
    """Lists CHEAP at a tenth of DEAR's prices; every call is served by DEAR (the answer names
    it) and billed 4x DEAR's list. With `empty_when_fallback`, a call that named `models` gets
    an empty answer (a quality failure: its record climbs to the next tier)."""

    empty_when_fallback: bool = False

    async def models(self, request: web.Request) -> web.Response:
        resp = await super().models(request)
        assert isinstance(resp.body, bytes)
        dear = orjson.loads(resp.body)["data"][0]
        tenth = {"prompt": str(PROMPT_PRICE / 10), "completion": str(COMPLETION_PRICE / 10)}
        cheap = {**dear, "id": CHEAP, "pricing": tenth}
        return web.json_response({"data": [dear, cheap]})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        gid, usage = self._bill(body, "ok")
        content = "" if self.empty_when_fallback and body.get("models") else "bonjour"
        doc = {
            "id": gid,
            "model": DEAR,
            "object": "chat.completion",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"content": content}}],
            "usage": usage,
        }
        return web.json_response(doc, headers={"X-Generation-Id": gid})


def _job(
    tmp_path: Path, base_url: str, cap: Decimal, n: int, tiers: dict[str, Any], **kw: Any
) -> Path:
    write_jsonl(tmp_path / "in.jsonl", texts(n))
    job = job_dict(
        tmp_path,
        endpoint={"base_url": base_url, "api_key_env": KEY_ENV},
        budget={"daily_usd": float(cap)},
        **kw,
    )
    job["tiers"] = tiers  # these only (job_dict would merge them into its four)
    job["limits"] = {**job["limits"], "concurrency": 1, "reconcile_wait_s": 0}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path


async def _run(job: Path) -> str:
    code, err = await asyncio.wait_for(run_cli_async("run", str(job)), timeout=300)
    assert code in (0, 3), err
    return err


async def test_a_native_fallback_tier_holds_its_cap(tmp_path: Path, serve: Any) -> None:
    """Every call asks for CHEAP (models [CHEAP, DEAR]) and DEAR serves it at 4x DEAR's list.
    One call at a time: the first overruns (reserved before anything was learnt), the rest
    are reserved at the ratio and the bill stays under the cap, booked in full."""
    standin = FallsBack("ok", generation_known=False)
    cap = Decimal("0.02")
    tiers = {"mid": {"models": [CHEAP, DEAR], "native_fallback": True, "stream": False}}
    job = _job(tmp_path, await serve(standin), cap, 12, tiers=tiers, quality=[])
    err = await _run(job)
    db = tmp_path / "results.duckdb"
    booked = query(db, "SELECT sum(cost_usd) FROM attempts")[0][0]
    assert len(standin.billed) >= 2, err  # a call after the first overrun: it proves something
    assert booked >= standin.total, (booked, standin.total)
    assert standin.total <= cap, (standin.total, cap, len(standin.billed))


async def test_an_escalation_to_the_model_that_served_is_reserved_at_its_ratio(
    tmp_path: Path, serve: Any
) -> None:
    """One record: its `mid` call (models [CHEAP, DEAR]) is served by DEAR at 4x its list
    and answers empty, so the record climbs to `premium` [DEAR]. The cap leaves room for 0.8
    of that bill after it. Before: the premium call was reserved at DEAR's list price (only
    CHEAP had learnt), fitted, and was billed ~2.8x that, past the cap. After: reserved at the
    ratio DEAR's own bill taught, it does not fit; the record waits (pending)."""
    standin = FallsBack("ok", generation_known=False, empty_when_fallback=True)
    base_url = await serve(standin)
    tiers = {
        "mid": {"models": [CHEAP, DEAR], "native_fallback": True, "stream": False},
        "premium": {"models": [DEAR], "stream": False},
    }
    # One mid call's bill (the same record's premium call costs the same: DEAR, 4x).
    probe = FallsBack("ok", generation_known=False)
    probe._bill({"messages": _messages(tmp_path)}, "ok")
    bill = probe.billed[0]
    cap = bill + bill * Decimal("0.8")
    job = _job(
        tmp_path, base_url, cap, 1, tiers=tiers, quality=["empty"],
        routing={"translation": "mid"},
    )  # fmt: skip
    err = await _run(job)
    db = tmp_path / "results.duckdb"
    booked = query(db, "SELECT sum(cost_usd) FROM attempts")[0][0]
    assert len(standin.billed) >= 1, err
    assert booked >= standin.total, (booked, standin.total)
    assert standin.total <= cap, (standin.total, cap, len(standin.billed), err[-1500:])


def _messages(tmp_path: Path) -> list[dict[str, str]]:
    """The messages the job sends for its one record (as the stand-in counts tokens)."""
    rec = texts(1)[0]
    user = f"Translate into {rec['target_lang']}:\n\n{rec['text']}"
    return [{"role": "system", "content": "You translate."}, {"role": "user", "content": user}]
