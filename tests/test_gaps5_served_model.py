"""A native fallback's bill, at the next run's start, is learnt under the model that served.

Run 1 asks for CHEAP (`models: [CHEAP, DEAR]`); DEAR serves and bills 4x its list. The run
learns DEAR's ratio in memory (money4), but the attempt row said only the model asked for, so
run 2's seed (`store.ratios`) filed the bill under CHEAP and DEAR started unlearnt: a call
that only DEAR may serve was reserved at DEAR's list price and overran the cap. Migration 12
keeps the model that served (`attempts.served_model`) and its own list-price worst case
(`attempts.served_listed_usd`); the seed learns under it as the in-run rule does.

Real CLI in a subprocess against a stand-in on a loopback port, real DuckDB file.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import yaml
from aiohttp import web
from factories import texts, write_jsonl
from subprocs import query, run_cli
from test_money4_served_ratio import CHEAP, DEAR, FallsBack, _job, _run


def _messages(rec: dict[str, Any]) -> list[dict[str, str]]:
    user = f"Translate into {rec['target_lang']}:\n\n{rec['text']}"
    return [{"role": "system", "content": "You translate."}, {"role": "user", "content": user}]


async def test_a_fallbacks_bill_is_learnt_under_the_model_that_served_at_the_next_start(
    tmp_path: Path, serve: Any
) -> None:
    """Before: run 2's premium call (DEAR alone) was reserved at DEAR's list price, fitted
    under the cap, and was billed ~2.8x that, past it. After: reserved at the ratio run 1's
    fallback answer taught DEAR, it does not fit; the record waits (pending)."""
    standin = FallsBack("ok", generation_known=False)
    base_url = await serve(standin)
    tiers = {
        "mid": {"models": [CHEAP, DEAR], "native_fallback": True, "stream": False},
        "premium": {"models": [DEAR], "stream": False},
    }
    recs = texts(2)
    probe = FallsBack("ok", generation_known=False)
    for rec in recs:
        probe._bill({"messages": _messages(rec)}, "ok")
    first, second = probe.billed
    cap = first + second * Decimal("0.8")
    job = _job(tmp_path, base_url, cap, 1, tiers=tiers, quality=[], routing={"translation": "mid"})
    err = await _run(job)
    db = tmp_path / "results.duckdb"
    assert len(standin.billed) == 1, err
    served = query(db, "SELECT model, served_model, served_listed_usd FROM attempts")
    assert served[0][:2] == (CHEAP, DEAR), served
    assert served[0][2] is not None, served
    assert served[0][2] > 0, served

    # Run 2, a new process: one more record, routed to the tier only DEAR serves.
    write_jsonl(tmp_path / "in.jsonl", recs)
    doc = yaml.safe_load(job.read_text())
    doc["routing"] = {"translation": "premium"}
    job.write_text(yaml.safe_dump(doc, sort_keys=False))
    err = await _run(job)
    booked = query(db, "SELECT sum(cost_usd) FROM attempts")[0][0]
    assert booked >= standin.total, (booked, standin.total)
    assert standin.total <= cap, (standin.total, cap, len(standin.billed), err[-1500:])
    status = query(db, "SELECT status FROM results WHERE record_key = 'r00001'")
    assert status == [("pending",)], (status, err[-1500:])


def test_the_seed_learns_under_the_model_that_served_and_reads_an_unmigrated_file(
    tmp_path: Path,
) -> None:
    """Store level: a fallback answer teaches the model asked for (against the call's worst
    case over its `models`, as before) and the model that served (against its own); a name
    outside the call's `models` (no `served_listed_usd`) teaches only the model asked for. A
    file from before migration 12 (a dry run does not migrate) is read as before."""
    import duckdb

    from batchroute.store import ResultStore
    from batchroute.store.ratios import learnt
    from batchroute.types import AttemptOutcome, AttemptRow, CostSource

    at = datetime(2026, 12, 7, 9, 0)

    def call(key: str, served: str | None, served_listed: str | None) -> AttemptRow:
        return AttemptRow(
            "run1", "t", key, 1, "mid", "m/cheap", at, 20, 200, AttemptOutcome.OK,
            cost_usd=Decimal("0.004"), cost_source=CostSource.OPENROUTER,
            reserved_usd=Decimal("0.002"), listed_usd=Decimal("0.002"),
            served_model=served,
            served_listed_usd=None if served_listed is None else Decimal(served_listed),
        )  # fmt: skip

    db = tmp_path / "r.duckdb"
    store = ResultStore(db)
    store.migrate()
    store.write([], [call("a", "m/dear", "0.001"), call("b", "m/dear-2026-01-01", None)])

    con = duckdb.connect(str(db))
    try:
        above, _ = learnt(con, at.date())
        assert above == {"m/cheap": Decimal(2), "m/dear": Decimal(4)}, above
        con.execute("ALTER TABLE attempts DROP COLUMN served_model")
        con.execute("ALTER TABLE attempts DROP COLUMN served_listed_usd")
        above, _ = learnt(con, at.date())
        assert above == {"m/cheap": Decimal(2)}, above
    finally:
        con.close()


OTHER = "example/other"


@dataclass
class FallsBackEmpty(FallsBack):
    """A call that names `models` is served by DEAR and answers empty (a quality failure);
    any other call is served by the model it asks for. Lists OTHER at DEAR's prices."""

    async def models(self, request: web.Request) -> web.Response:
        resp = await super().models(request)
        assert isinstance(resp.body, bytes)
        data = orjson.loads(resp.body)["data"]
        return web.json_response({"data": [*data, {**data[0], "id": OTHER}]})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        gid, usage = self._bill(body, "ok")
        fallback = bool(body.get("models"))
        doc = {
            "id": gid,
            "model": DEAR if fallback else body["model"],
            "object": "chat.completion",
            "choices": [
                {"index": 0, "finish_reason": "stop",
                 "message": {"content": "" if fallback else "bonjour"}}
            ],
            "usage": usage,
        }  # fmt: skip
        return web.json_response(doc, headers={"X-Generation-Id": gid})


async def test_report_credits_a_paid_fallback_answer_to_the_model_that_served(
    tmp_path: Path, serve: Any
) -> None:
    """The record's mid call (models [CHEAP, DEAR]) is served by DEAR and answers empty; the
    record climbs to premium [OTHER], which answers. Before: `report --by model` credited the
    mid call's bill to CHEAP (the record's answer named OTHER, so the view fell back to the
    model asked for), a model that billed nothing. After: to DEAR, the model that served."""
    standin = FallsBackEmpty("ok", generation_known=False)
    tiers = {
        "mid": {"models": [CHEAP, DEAR], "native_fallback": True, "stream": False},
        "premium": {"models": [OTHER], "stream": False},
    }
    job = _job(
        tmp_path, await serve(standin), Decimal(1), 1, tiers=tiers, quality=["empty"],
        routing={"translation": "mid"},
    )  # fmt: skip
    err = await _run(job)
    assert len(standin.billed) == 2, err
    db = tmp_path / "results.duckdb"
    out = await asyncio.to_thread(run_cli, "report", str(db), "--by", "model", "--format", "json")
    assert out.returncode == 0, out.stderr
    rows = {(r["model"], r["requested"]): Decimal(str(r["cost_usd"])) for r in
            orjson.loads(out.stdout)["rows"]}  # fmt: skip
    assert rows == {(DEAR, CHEAP): standin.billed[0], (OTHER, OTHER): standin.billed[1]}, rows
