"""The fake OpenRouter as an aiohttp Application: routes, validation, routing/fallback, faults.

Shapes follow docs/openrouter-api.md; bodies are built in `responses.py`, state lives in
`state.py`. Never imported by the library (only by tests and the CLI).
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson
from aiohttp import web

from batchroute.catalog import ModelInfo
from batchroute.simulator import accounts
from batchroute.simulator import responses as R
from batchroute.simulator.faults import (
    abort_connection,
    api_key_of,
    bad_request,
    error_response,
    fault_error,
    unauthorized,
)
from batchroute.simulator.scenario import FALLBACK_FAULTS, Scenario, ScriptStep
from batchroute.simulator.state import SIM_STATE, Clock, Generation, SimState, Sleep, draw
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
_AUTO_TARGET = "openai/gpt-4o-mini"  # what variable-priced routers (openrouter/auto) resolve to
_JSON = "application/json"


@dataclass(slots=True)
class Call:
    """One parsed chat request, with its per-request RNG."""

    model: str
    candidates: list[str]
    messages: list[Any]
    prompt_tokens: int
    max_tokens: int | None
    stream: bool
    json_mode: bool
    max_price: dict[str, Any] | None
    web: bool  # `plugins` asks for web search ({"id": "web"})
    rng: random.Random
    gid: str
    created: int

    def searches(self, model: str) -> bool:
        """Whether serving `model` runs a web search (the web plugin, or an `:online` id)."""
        return self.web or model.endswith(":online")


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


def _parse_call(st: SimState, body: dict[str, Any]) -> Call:
    model: str = body["model"]
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    fmt = body.get("response_format")
    json_mode = isinstance(fmt, dict) and fmt.get("type") in {"json_object", "json_schema"}
    provider = body.get("provider") or {}
    candidates = list(dict.fromkeys([model, *(body.get("models") or [])]))
    rng = st.rng_for(model, body["messages"])
    now = st.clock()
    return Call(
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


def _max_out(info: ModelInfo, call: Call) -> int:
    return call.max_tokens or info.max_completion_tokens or _DEFAULT_MAX_OUT


def _preflight_credits(st: SimState, call: Call) -> web.Response | None:
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


def _decide(st: SimState, call: Call, model: str) -> ScriptStep:
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
    request: web.Request, st: SimState, call: Call, model: str, step: ScriptStep
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
    return await _plain_answer(request, st, call, answer, fault)


@dataclass(frozen=True, slots=True)
class Answer:
    """What the model 'generated' for one call."""

    model: str
    info: ModelInfo
    content: str
    finish: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    generation_s: float
    searched: bool = False  # one web search ran (billed even when the tokens are not)

    def bill(self, st: SimState, *, insured: bool = False) -> R.Bill:
        """What this answer is billed; `insured`: zero-completion insurance waives the tokens."""
        upstream = (
            R.ZERO_PRICE
            if insured
            else R.price(self.info, self.model, self.prompt_tokens, self.completion_tokens)
        )
        return st.bill(upstream, model=self.info.id, searched=self.searched)

    def record_failed(self, st: SimState, call: Call, *, streamed: bool) -> None:
        """A generation that failed inside a 200 (zero-completion insurance: the tokens are
        not billed, a web search is): GET /generation knows it, so a client can learn its
        cost, usually $0."""
        bill = self.bill(st, insured=True)
        gen = self.generation(call, bill=bill, streamed=streamed, delivered=False, finish="error")
        gen.completion_tokens = 0
        st.record(gen, billed=bill.total > 0)

    def generation(
        self,
        call: Call,
        *,
        bill: R.Bill,
        streamed: bool,
        delivered: bool,
        finish: str | None = None,
        usage_reported: bool = True,
    ) -> Generation:
        return Generation(
            id=call.gid,
            model=self.model,
            provider=R.provider_for(self.model),
            bill=bill,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            finish_reason=finish or self.finish,
            streamed=streamed,
            created=float(call.created),
            latency_ms=round(self.latency_ms + self.generation_s * 1000),
            generation_time_ms=round(self.generation_s * 1000),
            delivered=delivered,
            usage_reported=usage_reported,
        )


_ANSWERS = frozenset(
    {"ok", "empty", "leading_ws", "malformed", "reset", "200_error", "choice_error", "no_usage"}
)
_UPSTREAM_ERROR = {"message": "Provider returned error", "code": 502}


async def _plain_answer(
    request: web.Request, st: SimState, call: Call, ans: Answer, fault: str
) -> web.StreamResponse:
    headers = {"X-Generation-Id": call.gid}
    if fault == "200_error":
        err = R.error_obj(
            502,
            "Provider returned error",
            error_type="provider_unavailable",
            metadata={
                "provider_name": R.provider_for(ans.model),
                "raw": orjson.dumps({"error": _UPSTREAM_ERROR}).decode(),
            },
        )
        ans.record_failed(st, call, streamed=False)
        return web.Response(body=R.envelope(err), headers=headers, content_type=_JSON)
    if fault == "choice_error":
        # zero-completion insurance: the usage is reported, the tokens cost 0 (a search does not)
        billed = ans.bill(st, insured=True)
        body = R.completion_body(
            gid=call.gid,
            model=ans.model,
            created=call.created,
            content="",
            finish="error",
            usage=R.usage_obj(ans.prompt_tokens, 0, billed),
            error=R.error_obj(502, "Provider returned error", error_type="provider_unavailable"),
        )
        gen = ans.generation(call, bill=billed, streamed=False, delivered=True, finish="error")
        gen.completion_tokens = 0
        st.record(gen, billed=True)
        return web.Response(body=orjson.dumps(body), headers=headers, content_type=_JSON)
    billed = ans.bill(st)
    reported = fault != "no_usage"
    body = R.completion_body(
        gid=call.gid,
        model=ans.model,
        created=call.created,
        content=ans.content,
        finish=ans.finish,
        usage=R.usage_obj(ans.prompt_tokens, ans.completion_tokens, billed) if reported else None,
    )
    data = orjson.dumps(body)
    delivered = fault not in {"malformed", "reset"}
    st.record(
        ans.generation(
            call, bill=billed, streamed=False, delivered=delivered, usage_reported=reported
        ),
        billed=delivered or st.scenario.bill_undelivered,
    )
    if fault == "leading_ws":
        data = b"\n\n   \n" + data
    elif fault == "malformed":
        data = data[: len(data) // 2]
    elif fault == "reset":
        return await _reset(request, data, headers)
    return web.Response(body=data, headers=headers, content_type=_JSON)


async def _reset(request: web.Request, data: bytes, headers: dict[str, str]) -> web.StreamResponse:
    """Send headers and half the body, then abort the TCP connection."""
    resp = web.StreamResponse(headers=headers)
    resp.content_type = _JSON
    resp.content_length = len(data)
    await resp.prepare(request)
    await resp.write(data[: len(data) // 2])
    abort_connection(request)
    return resp


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
        clock: wall clock in epoch seconds (outages, key_rpm, /generation delay, ids).
        sleep: awaited for latency, output speed and hangs (inject a fake in tests).
    """
    app = web.Application()
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
    return app
