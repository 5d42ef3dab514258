"""The fake OpenRouter as an aiohttp Application: routes, validation, routing/fallback, faults.

Shapes follow docs/openrouter-api.md; bodies are built in `responses.py`, state lives in
`state.py`; an answer is written by `plain.py` or `streaming.py` (from the `exchange.py` types).
Never imported by the library (only by tests and the CLI).
"""

from __future__ import annotations

import asyncio
import math
import time
from decimal import Decimal
from typing import Any

import orjson
from aiohttp import web

from batchroute.catalog import ModelInfo
from batchroute.simulator import accounts, batch_api
from batchroute.simulator import responses as R
from batchroute.simulator.exchange import Answer, SimCall
from batchroute.simulator.faults import (
    api_key_of,
    bad_request,
    error_response,
    fault_error,
    unauthorized,
)
from batchroute.simulator.plain import plain_answer
from batchroute.simulator.scenario import FALLBACK_FAULTS, Scenario, ScriptStep
from batchroute.simulator.state import SIM_STATE, Clock, SimState, Sleep, draw
from batchroute.simulator.streaming import stream_answer

PROVIDER_KEYS = frozenset(
    {
        "order",
        "allow_fallbacks",
        "sort",
        "only",
        "ignore",
        "require_parameters",
        "data_collection",
        "zdr",
        "enforce_distillable_text",
        "quantizations",
        "max_price",
        "preferred_max_latency",
        "preferred_min_throughput",
    }
)
_DEFAULT_MAX_OUT = 4096
_MAX_BODY = 256 * 1024 * 1024  # a 200 MB batch must get through; its own limit is checked after
_AUTO_TARGET = "openai/gpt-4o-mini"  # what variable-priced routers (openrouter/auto) resolve to


def _wants_web(plugins: Any) -> bool:
    """A `plugins` entry {"id": "web"} that is not explicitly disabled."""
    return isinstance(plugins, list) and any(
        isinstance(p, dict) and p.get("id") == "web" and p.get("enabled", True) is not False
        for p in plugins
    )


def _validate(st: SimState, body: Any) -> web.Response | None:
    """400s OpenRouter raises before routing (docs §1.1, §2.2)."""
    if not isinstance(body, dict):
        return bad_request("Invalid JSON body")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return bad_request('Input required: specify "messages" (a non-empty array)')
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return bad_request("No model specified: this simulator has no account default model")
    models = body.get("models") or []
    if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
        return bad_request("'models' must be an array of strings")
    if len(models) > 3:
        return bad_request("'models' array must have 3 items or fewer.")
    provider = body.get("provider")
    if provider is not None:
        if not isinstance(provider, dict):
            return bad_request("'provider' must be an object")
        unknown = [k for k in provider if k not in PROVIDER_KEYS]
        if unknown:
            keys = ", ".join(f"'{k}'" for k in unknown)
            return bad_request(f"Unrecognized key(s) in object: {keys}")
    for m in [model, *models]:
        if st.catalog.get(m) is None:
            av = R.availability("model_not_found", m, retryable=False)
            return error_response(
                400,
                R.error_obj(
                    400,
                    f"{m} is not a valid model ID",
                    error_type="invalid_request",
                    availability=av,
                ),
            )
    return None


def _parse_call(st: SimState, body: dict[str, Any]) -> SimCall:
    model: str = body["model"]
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    fmt = body.get("response_format")
    json_mode = isinstance(fmt, dict) and fmt.get("type") in {"json_object", "json_schema"}
    provider = body.get("provider") or {}
    candidates = list(dict.fromkeys([model, *(body.get("models") or [])]))
    rng = st.rng_for(model, body["messages"])
    now = st.clock()
    return SimCall(
        model=model,
        candidates=candidates,
        messages=body["messages"],
        prompt_tokens=R.count_prompt_tokens(body["messages"]),
        max_tokens=int(max_tokens) if isinstance(max_tokens, int | float) else None,
        stream=bool(body.get("stream")),
        json_mode=json_mode,
        max_price=provider.get("max_price") if isinstance(provider, dict) else None,
        web=_wants_web(body.get("plugins")),
        rng=rng,
        gid=R.gen_id(now, rng),
        created=int(now),
    )


def _info(st: SimState, model: str) -> ModelInfo:
    info = st.catalog.get(model)
    assert info is not None  # validated before routing
    return info


def _max_out(info: ModelInfo, call: SimCall) -> int:
    return call.max_tokens or info.max_completion_tokens or _DEFAULT_MAX_OUT


def _preflight_credits(st: SimState, call: SimCall) -> web.Response | None:
    """402 when the key's remaining limit cannot pay for prompt + max_tokens (docs §2.4)."""
    remaining = st.remaining_credit()
    if remaining is None:
        return None
    if remaining <= 0:
        return fault_error("402", call.model, call.gid, st.scenario)
    info = _info(st, call.model)
    search = st.search_price(info.id) if call.searches(call.model) else Decimal(0)
    free = info.is_free or call.model.endswith(":free")
    if info.variable_price or (free and not search):
        return None
    # the balance pays the tokens (only the fee on them under BYOK) and any web search
    rate = Decimal(str(st.scenario.byok_fee_rate)) if st.scenario.byok else Decimal(1)
    prompt_price = Decimal(0) if free else rate * (call.prompt_tokens * info.prompt + info.request)
    per_token = Decimal(0) if free else rate * info.completion
    wanted = _max_out(info, call)
    if search + prompt_price + wanted * per_token <= remaining:
        return None
    left = remaining - search - prompt_price
    afford = int(left / per_token) if per_token > 0 and left > 0 else 0
    message = (
        "This request requires more credits, or fewer max_tokens. You requested up to "
        f"{wanted} tokens, but can only afford {afford}. To increase, visit "
        "https://openrouter.ai/settings/credits and add more credits"
    )
    err = R.error_obj(402, message, error_type="payment_required", metadata={"provider_name": None})
    return error_response(402, err, gid=call.gid)


def _too_expensive(info: ModelInfo, max_price: dict[str, Any] | None) -> bool:
    """provider.max_price is USD per *million* tokens; /models prices are per token."""
    if not max_price:
        return False
    per_m = Decimal(1_000_000)
    for key, price in (("prompt", info.prompt), ("completion", info.completion)):
        cap = max_price.get(key)
        if isinstance(cap, int | float | str) and price * per_m > Decimal(str(cap)):
            return True
    cap = max_price.get("request")
    return isinstance(cap, int | float | str) and info.request > Decimal(str(cap))


def _decide(st: SimState, call: SimCall, model: str) -> ScriptStep:
    """Outage, then context overflow, then the script, then a random fault draw."""
    u = call.rng.random()  # always drawn, so the random stream does not depend on the path
    status = st.outage_status(model)
    if status is not None:
        return ScriptStep(fault=str(status))
    info = _info(st, model)
    if info.context_length and call.prompt_tokens + (call.max_tokens or 0) > info.context_length:
        return ScriptStep(fault="400_context")
    step = st.next_script_step(model)
    if step is not None:
        return step
    for bound, fault in st.effective(model).cumulative:
        if u < bound:
            return ScriptStep(fault=fault)
    return _OK


_OK = ScriptStep(fault="ok")


async def _chat(request: web.Request) -> web.StreamResponse:
    st = request.app[SIM_STATE]
    st.in_flight += 1  # until the answer is decided: tests wait on it, e.g. for hanging calls
    try:
        return await _answer_chat(request, st)
    finally:
        st.in_flight -= 1


async def _answer_chat(request: web.Request, st: SimState) -> web.StreamResponse:
    key = api_key_of(request)
    if key is None:
        return unauthorized()
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return bad_request("Invalid JSON body")
    problem = _validate(st, body)
    if problem is not None:
        return problem
    wait = st.admit_rpm(key)
    if wait is not None:
        return _rpm_limited(st, wait)
    call = _parse_call(st, body)
    refused = _preflight_credits(st, call)
    if refused is not None:
        return refused
    candidates = [m for m in call.candidates if not _too_expensive(_info(st, m), call.max_price)]
    if not candidates:
        av = R.availability(
            "constraint_filtered", call.model, retryable=False, excluded_by=["max_price"]
        )
        err = R.error_obj(
            404,
            f"No endpoints found for {call.model} within your max_price.",
            error_type="not_found",
            availability=av,
        )
        return error_response(404, err, gid=call.gid)
    for i, model in enumerate(candidates):
        step = _decide(st, call, model)
        if step.fault in FALLBACK_FAULTS and i < len(candidates) - 1:
            continue  # OpenRouter silently moves on to the next `models` entry
        return await _serve(request, st, call, model, step)
    raise AssertionError("unreachable")  # pragma: no cover


def _rpm_limited(st: SimState, wait: float) -> web.Response:
    rpm = st.scenario.key_rpm or 0
    reset_ms = int((st.clock() + wait) * 1000)
    headers = {
        "Retry-After": str(max(1, math.ceil(wait))),
        "X-RateLimit-Limit": str(rpm),
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": str(reset_ms),
    }
    err = R.error_obj(
        429,
        "Rate limit exceeded: key-requests-per-min",
        error_type="rate_limit_exceeded",
        metadata={"provider_name": None},
    )
    return error_response(429, err, headers=headers)


async def _serve(
    request: web.Request, st: SimState, call: SimCall, model: str, step: ScriptStep
) -> web.StreamResponse:
    fault = step.fault
    if fault == "hang":
        await st.sleep(st.scenario.hang_s)
        return fault_error("408", model, call.gid, st.scenario)
    if fault not in _ANSWERS:
        info = _info(st, model)
        tokens = (call.prompt_tokens, call.max_tokens or 0, info.context_length)
        return fault_error(
            fault, model, call.gid, st.scenario, step=step, tokens=tokens, now=st.clock()
        )
    served = _AUTO_TARGET if _info(st, model).variable_price else model
    info = _info(st, served)
    eff = st.effective(model)
    max_out = _max_out(info, call)
    ctoks = step.completion_tokens
    if ctoks is None:
        ctoks = round(draw(call.rng, eff.completion_tokens))
    ctoks = max(1, min(ctoks, max_out))
    latency = step.latency_ms if step.latency_ms is not None else draw(call.rng, eff.latency_ms)
    offset = call.rng.getrandbits(16)
    if fault == "empty":
        content, finish, ctoks = "", "length", 0
    else:
        content = R.make_content(served, ctoks, offset, json_mode=call.json_mode)
        finish = "length" if ctoks >= max_out else "stop"
    gen_s = ctoks / eff.tokens_per_s if eff.tokens_per_s > 0 else 0.0
    answer = Answer(
        served,
        info,
        content,
        finish,
        call.prompt_tokens,
        ctoks,
        latency,
        gen_s,
        searched=call.searches(model),
    )
    if call.stream:
        return await stream_answer(request, st, call, answer, fault)
    if latency + gen_s * 1000 > 0:
        await st.sleep(latency / 1000 + gen_s)
    return await plain_answer(request, st, call, answer, fault)


_ANSWERS = frozenset(
    {"ok", "empty", "leading_ws", "malformed", "reset", "200_error", "choice_error", "no_usage"}
)


def set_scenario(app: web.Application, scenario: Scenario) -> None:
    """Replace a running app's scenario (scripts restart; ledger and counters are kept)."""
    app[SIM_STATE].set_scenario(scenario)


def create_app(
    scenario: Scenario,
    *,
    seed: int = 0,
    clock: Clock | None = None,
    sleep: Sleep | None = None,
) -> web.Application:
    """The simulator as an aiohttp Application.

    Args:
        scenario: behaviour to simulate; replace later with `set_scenario` or POST /sim/scenario.
        seed: seeds every random draw (faults, lengths, latencies, content, ids).
        clock: wall clock in epoch seconds (outages, key_rpm, /generation delay, ids, batch
            timelines); POST /sim/advance moves it forward.
        sleep: awaited for latency, output speed and hangs (inject a fake in tests).
    """
    app = web.Application(client_max_size=_MAX_BODY)
    app[SIM_STATE] = SimState(
        scenario, seed=seed, clock=clock or time.time, sleep=sleep or asyncio.sleep
    )
    app.router.add_post("/api/v1/chat/completions", _chat)
    app.router.add_get("/api/v1/models", accounts.models)
    app.router.add_get("/api/v1/key", accounts.key)
    app.router.add_get("/api/v1/auth/key", accounts.key)
    app.router.add_get("/api/v1/generation", accounts.generation)
    app.router.add_get("/sim/ledger", accounts.ledger)
    app.router.add_get("/sim/scenario", accounts.get_scenario)
    app.router.add_post("/sim/scenario", accounts.post_scenario)
    app.router.add_post("/sim/advance", accounts.advance)
    batch_api.add_routes(app)
    return app
