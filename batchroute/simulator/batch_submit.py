"""POST /batches: the checks OpenRouter makes before its 202, then the batch's seeded fate.

Everything random about a batch (its id, whether it fails validation or expires, the order its
items finish in, each item's failure and answer length) is drawn here, once, from RNGs seeded by
the simulator's seed and the submitted content (docs/simulator.md "Batch API"). An item draws
from the same per-request RNG, in the same order, as the synchronous chat endpoint would, so a
record answered in a batch has the token counts it would have had synchronously on a fresh
simulator with the same seed: only the price differs.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import orjson

from batchroute.catalog import ModelInfo
from batchroute.simulator import responses as R
from batchroute.simulator.batch_store import Batch, BatchItem
from batchroute.simulator.state import SimState, draw

ENDPOINTS = ("/v1/chat/completions", "/v1/responses", "/v1/messages", "/v1/embeddings")
SIMULATED_ENDPOINT = "/v1/chat/completions"
CUSTOM_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
PROVIDER_KEYS = ("only", "allow_fallbacks")
ORDER_MESSAGE = (
    'Invalid batch body: "endpoint" and "model" (and "callback_url", if given) must be '
    'serialized before "requests"'
)
ITEM_ERROR = {"message": "Upstream request failed with status 500.", "type": "server_error"}
_DEFAULT_MAX_OUT = 4096
_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


class Refused(Exception):
    """The submission is answered with an HTTP error at once (nothing is stored or billed)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def no_batch_endpoint(st: SimState, model: str) -> bool:
    """Whether `model` is refused with 400 "does not have a :batch endpoint" (scenario rules:
    `batch_enabled`, `batch_requires_variant`, `batch_unsupported_models`; any variant other
    than `:batch`, and variable-priced routers, never have one)."""
    sc = st.scenario
    base, _, variant = model.partition(":")
    info = st.catalog.get(model)
    return (
        not sc.batch_enabled
        or (sc.batch_requires_variant and variant != "batch")
        or variant not in {"", "batch"}
        or model in sc.batch_unsupported_models
        or (variant == "batch" and base in sc.batch_unsupported_models)
        or (info is not None and info.variable_price)
    )


def check(st: SimState, body: Any) -> tuple[str, str, str, list[dict[str, Any]]]:
    """The synchronous 4xx checks; returns (endpoint, model, completion_window, requests)."""
    if not isinstance(body, dict):
        raise Refused(400, "Invalid JSON body: expected an object")
    keys = list(body)
    if "requests" not in body:
        raise Refused(400, "requests: Invalid input: expected array, received undefined")
    before = keys[: keys.index("requests")]
    needed = ["endpoint", "model"] + (["callback_url"] if "callback_url" in body else [])
    if any(k not in before for k in needed):
        raise Refused(400, ORDER_MESSAGE)
    endpoint, model = body["endpoint"], body["model"]
    if endpoint not in ENDPOINTS:
        raise Refused(400, f"endpoint: Invalid option: expected one of {'|'.join(ENDPOINTS)}")
    if endpoint != SIMULATED_ENDPOINT:
        raise Refused(400, f"the simulator serves only {SIMULATED_ENDPOINT} batches")
    window = body.get("completion_window", "24h")
    if window != "24h":
        raise Refused(400, 'completion_window: Invalid input: expected "24h"')
    _check_provider(body.get("provider"))
    if not isinstance(model, str) or st.catalog.get(model) is None:
        raise Refused(400, f"{model} is not a valid model ID")
    if no_batch_endpoint(st, model):
        raise Refused(400, f"Model '{model}' does not have a :batch endpoint.")
    requests = body["requests"]
    if not isinstance(requests, list) or not requests:
        raise Refused(400, "requests: Invalid input: expected a non-empty array")
    limit = st.scenario.batch_max_requests
    if len(requests) > limit:
        raise Refused(400, f"requests: Too big: a batch holds at most {limit} requests")
    _check_requests(requests, model)
    return endpoint, model, window, requests


def _check_provider(provider: Any) -> None:
    if provider is None:
        return
    if not isinstance(provider, dict):
        raise Refused(400, "provider: Invalid input: expected object")
    unknown = [k for k in provider if k not in PROVIDER_KEYS]
    if unknown:
        raise Refused(400, f"Unrecognized key(s) in object: {', '.join(repr(k) for k in unknown)}")


def _check_requests(requests: list[Any], model: str) -> None:
    seen: set[str] = set()
    for line, req in enumerate(requests, 1):
        if not isinstance(req, dict):
            raise Refused(400, f"Request at line {line}: Invalid input: expected object")
        cid = req.get("custom_id")
        if not isinstance(cid, str):
            raise Refused(400, "custom_id: Invalid input: expected string")
        if not CUSTOM_ID.fullmatch(cid):
            raise Refused(
                400,
                f"Request at line {line}: custom_id {cid!r} must be 1-64 characters of "
                "[A-Za-z0-9_-]",
            )
        if cid in seen:
            raise Refused(422, f"Request at line {line} has a duplicate custom_id '{cid}'")
        seen.add(cid)
        body = req.get("body")
        if not isinstance(body, dict):
            raise Refused(400, f"Request at line {line}: body: Invalid input: expected object")
        if "model" in body and body["model"] != model:
            raise Refused(
                400,
                f"Request at line {line}: model '{body['model']}' does not match the batch "
                f"model '{model}'",
            )
        if body.get("stream"):
            raise Refused(400, f"Request at line {line}: streaming is not supported in batches")


def _max_out(info: ModelInfo, body: dict[str, Any]) -> int:
    m = body.get("max_completion_tokens") or body.get("max_tokens")
    if isinstance(m, int) and not isinstance(m, bool):
        return m
    return info.max_completion_tokens or _DEFAULT_MAX_OUT


def _invalid(info: ModelInfo, model: str, requests: list[dict[str, Any]]) -> str | None:
    """The first item that makes the whole batch fail validation after the 202, as the message
    naming it (empty messages, max_tokens < 1 or beyond the context, mixed response_format on a
    Google model)."""
    formats = set()
    for line, req in enumerate(requests, 1):
        body, cid = req["body"], req["custom_id"]
        where = f"Request at line {line} (custom_id '{cid}')"
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return f"{where}: messages: must be a non-empty array"
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
            return f"{where}: max_tokens: must be an integer >= 1"
        prompt = R.count_prompt_tokens(messages)
        ctx = info.context_length
        if ctx and prompt + _max_out(info, body) > ctx:
            return f"{where}: This endpoint's maximum context length is {ctx} tokens."
        formats.add(orjson.dumps(body.get("response_format"), option=orjson.OPT_SORT_KEYS))
        if model.startswith("google/") and len(formats) > 1:
            return f"{where}: every request in a batch must use the same response_format"
    return None


def _batch_price(st: SimState, info: ModelInfo, prompt: int, completion: int) -> R.Priced:
    if info.is_free or info.variable_price:
        return R.ZERO_PRICE
    ratio = Decimal(str(st.scenario.batch_price_ratio))
    q = R.quantize_cost
    return R.Priced(
        q(info.cost(prompt, completion) * ratio),
        q(prompt * info.prompt * ratio),
        q(completion * info.completion * ratio),
    )


def worst_cost(st: SimState, info: ModelInfo, requests: list[dict[str, Any]]) -> Decimal:
    """A batch's estimated cost for the 402 balance check: every item at its max_tokens."""
    ratio = Decimal(str(st.scenario.batch_price_ratio))
    total = Decimal(0)
    for req in requests:
        body = req["body"]
        messages = body.get("messages")
        prompt = R.count_prompt_tokens(messages) if isinstance(messages, list) else 0
        total += info.cost(prompt, max(_max_out(info, body), 0)) * ratio
    return total


def build(
    st: SimState, endpoint: str, model: str, window: str, requests: list[dict[str, Any]]
) -> Batch:
    """Draw a checked submission's fate and return the Batch (not stored yet)."""
    sc, now = st.scenario, st.clock()
    info = st.catalog.get(model)
    assert info is not None  # checked
    rng = st.rng_for(f"batch|{model}", requests)
    batch_id = f"batch-{int(now)}-{''.join(rng.choices(_ALNUM, k=20))}"
    n = len(requests)
    v, p = sc.batch_validating_s, sc.batch_in_progress_s
    fail = _invalid(info, model, requests)
    u_invalid, bad_line = rng.random(), rng.randrange(n)
    if fail is None and u_invalid < sc.rate_batch_invalid:
        cid = requests[bad_line]["custom_id"]
        fail = (
            f"Request at line {bad_line + 1} (custom_id '{cid}'): the provider rejected the "
            "request during validation"
        )
    u_expire, frac = rng.random(), rng.uniform(0.25, 0.75)
    expire_at = v + frac * p if u_expire < sc.rate_batch_expire else None
    if sc.batch_window_s < (expire_at if expire_at is not None else v + p + sc.batch_finalizing_s):
        expire_at = sc.batch_window_s
    order = rng.sample(range(n), n)
    items = []
    for k, i in enumerate(order):
        done_at = v + (k + 1) / n * p
        result_id = f"batch_req_{''.join(rng.choices(_ALNUM, k=20))}"
        req = requests[i]
        if fail is not None:
            items.append(_placeholder(req, i + 1, done_at, result_id, info.id))
        else:
            items.append(_item(st, info, req, i + 1, done_at, result_id, now))
    return Batch(
        id=batch_id,
        endpoint=endpoint,
        model=model,
        completion_window=window,
        created_at=now,
        items=items,
        validating_s=v,
        in_progress_s=p,
        finalizing_s=sc.batch_finalizing_s,
        not_found_s=sc.batch_not_found_s,
        fail_message=fail,
        expire_at=expire_at,
    )


def _placeholder(
    req: dict[str, Any], line: int, done_at: float, result_id: str, model: str
) -> BatchItem:
    result = {"id": result_id, "custom_id": req["custom_id"], "response": None, "error": None}
    return BatchItem(req["custom_id"], line, done_at, result, None, model, None, 0, 0)


def _item(
    st: SimState,
    info: ModelInfo,
    req: dict[str, Any],
    line: int,
    done_at: float,
    result_id: str,
    now: float,
) -> BatchItem:
    """One item's answer, drawn like the synchronous endpoint draws it (same RNG, same order:
    generation id, fault draw, completion tokens, latency, content offset)."""
    body, cid = req["body"], req["custom_id"]
    messages = body["messages"]
    rng = st.rng_for(info.id, messages)
    gid = f"gen-batch-{int(now)}-{''.join(rng.choices(_ALNUM, k=20))}"
    failed = rng.random() < st.scenario.rate_batch_item_error
    eff = st.effective(info.id)
    max_out = _max_out(info, body)
    ctoks = max(1, min(round(draw(rng, eff.completion_tokens)), max_out))
    draw(rng, eff.latency_ms)
    offset = rng.getrandbits(16)
    prompt = R.count_prompt_tokens(messages)
    if failed:
        error = {**ITEM_ERROR, "param": None}
        result = {"id": result_id, "custom_id": cid, "response": None, "error": error}
        return BatchItem(cid, line, done_at, result, None, info.id, None, prompt, 0)
    fmt = body.get("response_format")
    json_mode = isinstance(fmt, dict) and fmt.get("type") in {"json_object", "json_schema"}
    content = R.make_content(info.id, ctoks, offset, json_mode=json_mode)
    bill = st.bill(_batch_price(st, info, prompt, ctoks), model=info.id, searched=False)
    mode = st.scenario.batch_item_usage
    usage: dict[str, Any] | None = None
    if mode == "cost":
        usage = R.usage_obj(prompt, ctoks, bill)
    elif mode == "tokens":
        total = prompt + ctoks
        usage = {"prompt_tokens": prompt, "completion_tokens": ctoks, "total_tokens": total}
    answer = R.completion_body(
        gid=gid,
        model=info.id,
        created=int(now),
        content=content,
        finish="length" if ctoks >= max_out else "stop",
        usage=usage,
    )
    answer["service_tier"] = "batch"
    response = {"status_code": 200, "request_id": None, "body": answer}
    result = {"id": result_id, "custom_id": cid, "response": response, "error": None}
    return BatchItem(cid, line, done_at, result, bill, info.id, gid, prompt, ctoks)
