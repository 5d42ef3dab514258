"""A reported cost far above its reservation is booked as billed, and the cap still holds (money3).

A provider priced above `/models`, a multiplier nobody documented, more web searches than
reserved: the answer's `usage.cost` is then above its reservation. Above twice it, it used to be
"not believed" and booked at the reservation, and GET /generation, when it never answered, left
it there for good: the database said less than the bill, and the cap (which counts what is
booked) let the run spend past it. Now the figure is booked as reported, the attempt is flagged
`cost_above_reservation`, and the model's later calls are reserved at the ratio seen.

Real CLI in a subprocess against a stand-in on a loopback port, real DuckDB file.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from aiohttp import web
from factories import job_dict, standin_job, texts, write_jsonl
from subprocs import KEY_ENV, query, run_cli_async
from test_billing_standin import MODEL, StandIn

N = 12
CAP = Decimal("0.02")


@dataclass
class PricedAbove(StandIn):
    """Bills every generation at `factor` × the catalogue's prices (a provider priced above
    `/models`); with `fail`, answers a 200 without choices that still carries the cost (the
    failure path: the client books the failed call at that cost)."""

    factor: int = 4
    fail: bool = False

    def _bill(self, body: dict[str, Any], outcome: str) -> tuple[str, dict[str, Any]]:
        gid, usage = super()._bill(body, outcome)
        real = self.billed[-1] * self.factor
        self.billed[-1] = real
        self.generations[gid]["total_cost"] = float(real)
        self.generations[gid]["upstream_inference_cost"] = float(real)
        usage["cost"] = float(real)
        usage["cost_details"] = {"upstream_inference_cost": float(real)}
        return gid, usage

    async def chat(self, request: web.Request) -> web.StreamResponse:
        if not self.fail:
            return await super().chat(request)
        body = orjson.loads(await request.read())
        gid, usage = self._bill(body, "ok")
        doc = {"id": gid, "model": body["model"], "choices": [], "usage": usage}
        return web.json_response(doc, headers={"X-Generation-Id": gid})


async def _run(tmp_path: Path, standin: PricedAbove, base_url: str, concurrency: int) -> Path:
    limits = {"concurrency": concurrency, "reconcile_wait_s": 0.5}
    path = standin_job(tmp_path, base_url, model=MODEL, cap=CAP, records=texts(N), limits=limits)
    code, err = await run_cli_async("run", str(path))
    assert code in (0, 3), err  # 3: the budget ran out (the cap is reached, as it should be)
    return tmp_path / "results.duckdb"


@pytest.mark.parametrize("fail", [False, True], ids=["answered", "failed"])
async def test_a_cost_above_twice_the_reservation_is_booked_and_the_cap_holds(
    tmp_path: Path, serve: Any, fail: bool
) -> None:
    """Before: 12 calls billed $0.050124 against a $0.02 cap, DuckDB said $0.018399 (each
    ~2.8× its reservation, booked at it; /generation never answers); the failure path (a 200
    without choices that says its cost) $0.050076 billed, $0.018347 booked. After: 4 calls,
    $0.019944 billed and booked (failure path $0.019848), under the cap."""
    standin = PricedAbove("ok", generation_known=False, fail=fail)
    db = await _run(tmp_path, standin, await serve(standin), concurrency=1)
    assert standin.billed, "the stand-in billed nothing: the test proves nothing"
    attempts = query(db, "SELECT sum(cost_usd) FROM attempts")[0][0]
    results = query(db, "SELECT sum(cost_usd) FROM results")[0][0]
    assert attempts >= standin.total, (attempts, standin.total)  # never under the bill
    assert results == attempts
    # One call at a time: the first overrun teaches the ratio, the later calls are reserved
    # at it, so the bill stays under the cap.
    assert standin.total <= CAP, (standin.total, CAP)
    if not fail:
        flags = query(db, "SELECT count(*) FROM attempts WHERE error_type = ?",
                      ["cost_above_reservation"])  # fmt: skip
        assert flags[0][0] >= 1


async def test_in_flight_calls_overrun_once_but_are_booked_as_billed(
    tmp_path: Path, serve: Any
) -> None:
    """Four calls at once: the first wave was reserved before any overrun was seen, so the
    cap may be passed by that wave, but never booked under the bill."""
    standin = PricedAbove("ok", generation_known=False)
    db = await _run(tmp_path, standin, await serve(standin), concurrency=4)
    attempts = query(db, "SELECT sum(cost_usd) FROM attempts")[0][0]
    assert standin.billed
    assert attempts >= standin.total, (attempts, standin.total)
    assert standin.total <= CAP + 4 * max(standin.billed), (standin.total, CAP)


@dataclass
class GenerationAbove(StandIn):
    """Answers without `usage` (booked at the reservation until /generation), and bills
    `amount` for each generation, as /generation then says."""

    amount: Decimal = Decimal(12_000)

    def _bill(self, body: dict[str, Any], outcome: str) -> tuple[str, dict[str, Any]]:
        gid, usage = super()._bill(body, outcome)
        self.billed[-1] = self.amount
        self.generations[gid]["total_cost"] = float(self.amount)
        self.generations[gid]["upstream_inference_cost"] = float(self.amount)
        return gid, usage


async def test_a_generation_figure_above_any_believable_one_is_still_booked(
    tmp_path: Path, serve: Any
) -> None:
    """Before: /generation's $12,000 for a call was dropped as "not a bill" (above
    $10,000): DuckDB kept the $0.0017 reservation. After: booked, and the run stops."""
    standin = GenerationAbove("no_usage")
    base_url = await serve(standin)
    write_jsonl(tmp_path / "in.jsonl", texts(1))
    job = job_dict(tmp_path, quality=[], endpoint={"base_url": base_url, "api_key_env": KEY_ENV})
    job["tiers"] = {"premium": {"models": [MODEL], "stream": False}}
    job["limits"] = {**job["limits"], "concurrency": 1, "reconcile_wait_s": 30}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    code, err = await run_cli_async("run", str(path))
    assert code in (0, 3), err
    assert len(standin.billed) == 1
    attempts = query(tmp_path / "results.duckdb", "SELECT sum(cost_usd) FROM attempts")[0][0]
    assert attempts >= standin.total, (attempts, standin.total)


@dataclass
class ListedFree(StandIn):
    """`/models` lists the model at $0 (a promotion that ended, say) but every generation is
    billed $0.005: its reservation is $0, so no ratio can raise it."""

    async def models(self, _: web.Request) -> web.Response:
        model = {
            "id": MODEL,
            "context_length": 128_000,
            "pricing": {"prompt": "0", "completion": "0"},
            "top_provider": {"context_length": 128_000, "max_completion_tokens": 16_384},
            "supported_parameters": ["max_tokens"],
        }
        return web.json_response({"data": [model]})

    def _bill(self, body: dict[str, Any], outcome: str) -> tuple[str, dict[str, Any]]:
        gid, usage = super()._bill(body, outcome)
        self.billed[-1] = Decimal("0.005")
        usage["cost"] = 0.005
        usage["cost_details"] = {"upstream_inference_cost": 0.005}
        return gid, usage


async def test_a_model_listed_at_zero_but_billed_is_booked_and_capped(
    tmp_path: Path, serve: Any
) -> None:
    """Before: each $0.005 bill was above twice its $0 reservation, booked at $0: 12 calls,
    $0.06 billed against a $0.02 cap, DuckDB $0. With costs booked but no floor, one call past
    the cap ($0.025). After: the largest cost seen is the model's reservation floor: 4 calls."""
    standin = ListedFree("ok", generation_known=False)
    db = await _run(tmp_path, standin, await serve(standin), concurrency=1)
    attempts = query(db, "SELECT sum(cost_usd) FROM attempts")[0][0]
    assert standin.billed
    assert attempts >= standin.total, (attempts, standin.total)
    assert standin.total <= CAP, (standin.total, len(standin.billed))


async def test_a_learnt_ratio_past_the_cap_leaves_records_pending_not_failed(
    tmp_path: Path, serve: Any
) -> None:
    """Billed at 40× /models: the first call alone passes the $0.02 cap (nothing can know it
    before), and the ratio learnt makes every later reservation larger than the whole cap.
    Those records were listed well under the cap: they wait for tomorrow (`pending`, exit 3),
    not `failed` as `exceeds_daily_cap` (which says no run could ever make them)."""
    standin = PricedAbove("ok", generation_known=False, factor=40)
    db = await _run(tmp_path, standin, await serve(standin), concurrency=1)
    assert len(standin.billed) == 1
    rows = dict(query(db, "SELECT status, count(*) FROM results GROUP BY 1"))
    assert rows.get("failed", 0) == 0, rows
    booked = query(db, "SELECT sum(cost_usd) FROM attempts")[0][0]
    assert booked >= standin.total
