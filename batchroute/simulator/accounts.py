"""The simulator's accounting endpoints: /models, /key, /generation and the /sim/* controls.

The chat endpoint and its faults live in `app.py`; these only read or replace `SimState`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
from aiohttp import web

from batchroute.simulator import responses as R
from batchroute.simulator.faults import (
    api_key_of,
    bad_request,
    error_response,
    json_response,
    unauthorized,
)
from batchroute.simulator.scenario import Scenario
from batchroute.simulator.state import SIM_STATE, Generation, SimState


async def models(request: web.Request) -> web.Response:
    st = request.app[SIM_STATE]
    wanted = request.query.get("output_modalities", "")
    body = st.models_cache.get(wanted)
    if body is None:
        body = _filter_models(st.catalog.raw, wanted)
        st.models_cache[wanted] = body
    return web.Response(body=body, content_type="application/json")


def _filter_models(raw: bytes, wanted: str) -> bytes:
    mods = {m.strip() for m in wanted.split(",") if m.strip()}
    if not mods or "all" in mods:
        return raw
    doc = orjson.loads(raw)

    def outputs(m: dict[str, Any]) -> set[str]:
        arch = m.get("architecture") or {}
        out = arch.get("output_modalities")
        if out is None:
            out = str(arch.get("modality", "text->text")).partition("->")[2].split("+")
        return set(out)

    doc["data"] = [m for m in doc["data"] if mods <= outputs(m)]
    return orjson.dumps(doc)


def _key_data(st: SimState) -> dict[str, Any]:
    """`usage*`: what the balance was charged (BYOK fees, searches); `byok_usage*`: what the
    providers billed the user's own keys under BYOK."""
    st.settle_batches()
    usage = float(st.balance_total)
    byok = float(st.byok_total)
    limit = st.scenario.key_limit_usd
    remaining = st.remaining_credit()
    return {
        "label": "sk-or-v1-sim...",
        "limit": limit,
        "limit_remaining": None if remaining is None else float(max(remaining, Decimal(0))),
        "limit_reset": None,
        "include_byok_in_limit": False,
        "usage": usage,
        "usage_daily": usage,
        "usage_weekly": usage,
        "usage_monthly": usage,
        "byok_usage": byok,
        "byok_usage_daily": byok,
        "byok_usage_weekly": byok,
        "byok_usage_monthly": byok,
        "is_free_tier": False,
        "is_management_key": False,
        "is_provisioning_key": False,
        "creator_user_id": R.USER_ID,
        "expires_at": None,
        "rate_limit": {"requests": -1, "interval": "10s", "note": "deprecated, safe to ignore"},
    }


async def key(request: web.Request) -> web.Response:
    if api_key_of(request) is None:
        return unauthorized()
    return json_response({"data": _key_data(request.app[SIM_STATE])})


async def generation(request: web.Request) -> web.Response:
    st = request.app[SIM_STATE]
    if api_key_of(request) is None:
        return unauthorized()
    gid = request.query.get("id", "")
    if not gid:
        return bad_request("Missing generation id")
    gen = st.generations.get(gid)
    if gen is None or st.clock() - gen.created < st.scenario.generation_delay_s:
        err = R.error_obj(404, f"Generation {gid} not found", error_type="not_found")
        return error_response(404, err, gid=gid)
    return json_response({"data": _generation_data(gen)})


def _generation_data(g: Generation) -> dict[str, Any]:
    """`total_cost` = `usage` = what the balance was charged (usage.cost);
    `upstream_inference_cost` = the provider's charge for the tokens (no search fees)."""
    cost = float(g.bill.cost)
    return {
        "id": g.id,
        "upstream_id": g.id.replace("gen-", "chatcmpl-", 1),
        "request_id": None,
        "session_id": None,
        "created_at": R.iso(g.created),
        "model": g.model,
        "provider_name": g.provider,
        "router": None,
        "total_cost": cost,
        "usage": cost,
        "upstream_inference_cost": float(g.bill.upstream.total),
        "cache_discount": None,
        "is_byok": g.bill.byok,
        "tokens_prompt": g.prompt_tokens,
        "tokens_completion": g.completion_tokens,
        "native_tokens_prompt": g.prompt_tokens,
        "native_tokens_completion": g.completion_tokens,
        "native_tokens_reasoning": 0,
        "native_tokens_cached": 0,
        "native_tokens_completion_images": 0,
        "num_media_prompt": None,
        "num_media_completion": None,
        "num_search_results": R.WEB_SEARCH_RESULTS * g.bill.searches or None,
        "latency": g.latency_ms,
        "generation_time": g.generation_time_ms,
        "moderation_latency": None,
        "finish_reason": g.finish_reason,
        "native_finish_reason": g.finish_reason,
        "streamed": g.streamed,
        "cancelled": False,
        "api_type": "completions",
        "origin": "",
        "app_id": None,
        "provider_responses": None,
    }


async def ledger(request: web.Request) -> web.Response:
    return json_response(request.app[SIM_STATE].ledger())


async def get_scenario(request: web.Request) -> web.Response:
    return json_response(request.app[SIM_STATE].scenario.to_dict())


async def post_scenario(request: web.Request) -> web.Response:
    try:
        scenario = Scenario.from_dict(orjson.loads(await request.read()))
    except ValueError as exc:  # orjson.JSONDecodeError and pydantic errors are ValueErrors
        return json_response({"error": {"code": 400, "message": str(exc)}}, status=400)
    request.app[SIM_STATE].set_scenario(scenario)
    return json_response(scenario.to_dict())


async def advance(request: web.Request) -> web.Response:
    """POST /sim/advance {"seconds": s}: move the simulator's clock forward by s ≥ 0 (batches
    progress without anyone sleeping); answers {"now": epoch seconds}."""
    st = request.app[SIM_STATE]
    try:
        seconds = orjson.loads(await request.read())["seconds"]
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
            raise ValueError(seconds)
    except (ValueError, KeyError, TypeError) as exc:
        msg = f'expected {{"seconds": a number >= 0}} ({exc!r})'
        return json_response({"error": {"code": 400, "message": msg}}, status=400)
    st.advance(float(seconds))
    return json_response({"now": st.clock()})
