"""The batch lane's pure parts: custom ids, local pre-validation, request bodies, chunking,
reading result items, and settling a batch's bill onto its items (exact Decimal).

No I/O: `runner/lane.py` does the calls and the writes.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from typing import Any

import orjson

from batchroute.budget import USD_PLACES, ceil_usd, quantize_usd
from batchroute.catalog import ModelInfo
from batchroute.client import byok_of, parse_completion
from batchroute.errors import UpstreamError
from batchroute.plan import TYPICAL_COMPLETION_TOKENS, RunPlan, WorkItem
from batchroute.types import Completion, CostSource

MAX_REQUESTS = 5_000  # per batch (batch-api.md §3)
MAX_BYTES = 150_000_000  # the API's cap is 200 MB; margin for how it measures the body
CUSTOM_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
ENDPOINT = "/v1/chat/completions"


def custom_id(job_name: str, record_key: str) -> str:
    """`r` + 40 hex digits of SHA-256(job, key): 41 chars of [A-Za-z0-9_-], the same in every
    run, and 160 bits, so two keys of a job never collide in practice (keys themselves may be
    longer than 64 or hold any character)."""
    digest = hashlib.sha256(f"{job_name}\0{record_key}".encode()).hexdigest()
    return "r" + digest[:40]


def batch_model(model: str, listed: Container[str]) -> str:
    """The id to submit: the catalogue's `:batch` variant when it lists one (`listed`: the ids
    of `/models` as they are, not `Catalog`, which prices any `x:batch` at `x`), else the
    model. Reserving at that id's price is reserving at the price the catalogue proves:
    without a `:batch` entry, the full price (the ~50 % discount is "typical", not promised)."""
    variant = model if model.endswith(":batch") else f"{model}:batch"
    return variant if variant in listed else model


def other_form(model: str) -> str:
    """The other id of a model for the Batch API (base ↔ `:batch`): which one an account
    accepts varies, and a refusal of one is worth one try of the other (batch-api.md §7)."""
    return model.removesuffix(":batch") if model.endswith(":batch") else f"{model}:batch"


def worst_item(plan: RunPlan, item: WorkItem) -> Decimal:
    """The most the lane may reserve for a record's batch item (at either id form: when one
    is refused, the other is tried). A failed item then goes through the tier's synchronous
    chain, so a batch tier's worst case is this plus `RunPlan.worst_record` (the dry run's)."""
    return plan.worst_call(batch_forms(plan, item.tier), item.prompt_bound)


def batch_forms(plan: RunPlan, tier: str) -> tuple[str, str]:
    """The ids the lane may submit a batch tier's items as (the second after a refusal)."""
    first = batch_model(plan.tiers[tier].models[0], plan.catalog.models)
    return first, other_form(first)


BATCH_TYPICAL = Decimal("0.5")
"""What a batch item costs against the standard price when the catalogue lists no `:batch`
variant: "typically billed at 50 %" (batch-api.md "Pricing"; the simulator's default). For
expected costs only: a reservation never counts on it."""


def expected_item(plan: RunPlan, tier: str, prompt_tokens: int) -> Decimal:
    """What a record's batch item typically costs: a typical answer billed at the listed
    `:batch` price of the id the lane submits, else at the typical batch discount."""
    base = plan.tiers[tier].models[0]
    model = batch_model(base, plan.catalog.models)
    out = min(plan.spec.request.max_tokens, TYPICAL_COMPLETION_TOKENS)
    cost = plan.info(model).cost(prompt_tokens, out)
    return quantize_usd(cost if model != base else cost * BATCH_TYPICAL)


def expected_record(plan: RunPlan, tier: str, prompt_tokens: int) -> Decimal:
    """What a record of `tier` typically costs at list prices (the dry run's expected cost): a
    typical answer from the tier's first model, at the price the lane is billed for a batch
    tier (the worst case is the plan's: what the run reserves, call by call)."""
    if plan.spec.tiers[tier].batch:
        return expected_item(plan, tier, prompt_tokens)
    return plan.expected_call(tier, prompt_tokens)


def billed_by_models(plan: RunPlan, tier: str) -> tuple[str, ...]:
    """The models whose learnt ratios a typical call to `tier` is billed at: the lane's id
    for a batch tier, else the tier's first model and its native fallbacks."""
    first = plan.tiers[tier].models[0]
    if plan.spec.tiers[tier].batch:
        return (batch_model(first, plan.catalog.models),)
    return plan.served_by(tier, first)[1]


def why_not_batchable(
    messages: Sequence[dict[str, Any]], max_tokens: int, prompt_bound: int, info: ModelInfo | None
) -> str | None:
    """Why one record must not go into a batch (one bad item fails all 5,000: batch-api.md §4),
    or None. Such a record is sent synchronously instead, where it fails (or not) alone."""
    if not messages or not any(str(m.get("content") or "").strip() for m in messages):
        return "empty messages"
    if max_tokens < 1:
        return "max_tokens < 1"
    if info is not None and info.context_length > 0:
        if max_tokens > info.context_length:
            return f"max_tokens {max_tokens} beyond the context ({info.context_length})"
        if prompt_bound + max_tokens > info.context_length:
            return "the prompt may not fit the context with max_tokens"
    return None


def item_body(messages: list[dict[str, str]], params: dict[str, Any]) -> dict[str, Any]:
    """One request's body: no `model` (it inherits the batch's), no routing, no `usage` flag."""
    return {"messages": messages, **params}


def create_body(model: str, requests: list[dict[str, Any]]) -> bytes:
    """The POST /batches body, keys in the order the server's stream parser needs:
    `endpoint` and `model` before `requests` (else 400)."""
    return orjson.dumps(
        {"endpoint": ENDPOINT, "model": model, "completion_window": "24h", "requests": requests}
    )


def chunks(sizes: Sequence[int], *, max_requests: int = MAX_REQUESTS) -> list[range]:
    """Split items (their serialized sizes in bytes) into consecutive batches within the
    request and byte limits."""
    out: list[range] = []
    start, total = 0, 0
    for i, size in enumerate(sizes):
        if i > start and (i - start >= max_requests or total + size > MAX_BYTES):
            out.append(range(start, i))
            start, total = i, 0
        total += size + 1
    if start < len(sizes):
        out.append(range(start, len(sizes)))
    return out


def fitting_prefix(worst: Sequence[Decimal], room: Decimal) -> int:
    """How many items, from the first, fit under `room` (a batch is all or nothing: once
    submitted its cost is committed, so it is never sent over the cap)."""
    total = Decimal(0)
    for n, w in enumerate(worst):
        total += w
        if total > room:
            return n
    return len(worst)


@dataclass(slots=True)
class ItemResult:
    """One result line, keyed by its custom_id: an answer, or why it has none."""

    custom_id: str
    completion: Completion | None = None
    error: str | None = None
    error_type: str = "batch_item_failed"


def read_items(raw: Iterable[Any], model: str) -> dict[str, ItemResult]:
    """Result items by custom_id (never by order). A line that cannot be read is an error of
    its own item (when its custom_id can be read at all), never of the batch."""
    out: dict[str, ItemResult] = {}
    for line in raw:
        cid = line.get("custom_id") if isinstance(line, dict) else None
        if not isinstance(cid, str):
            continue  # nobody to blame: its record stays unanswered and is retried
        out[cid] = _read_item(cid, line, model)
    return out


def _read_item(cid: str, line: dict[str, Any], model: str) -> ItemResult:
    err, resp = line.get("error"), line.get("response")
    if isinstance(err, dict) and err:
        # "batch_expired": never run (OpenAI's code, and the simulator's), so worth resubmitting
        kind = "batch_expired" if err.get("type") == "batch_expired" else "batch_item_failed"
        return ItemResult(cid, error=str(err.get("message") or err)[:500], error_type=kind)
    if not isinstance(resp, dict) or not isinstance(resp.get("body"), dict):
        return ItemResult(cid, error="malformed result line", error_type="malformed_response")
    status = resp.get("status_code")
    if isinstance(status, int) and status >= 300:
        return ItemResult(cid, error=f"item answered HTTP {status}")
    try:
        c = parse_completion(orjson.dumps(resp["body"]), 200, {}, model=model)
    except UpstreamError as exc:
        return ItemResult(cid, error=str(exc)[:500], error_type=exc.error_type)
    return ItemResult(cid, completion=c)


@dataclass(frozen=True, slots=True)
class Bill:
    """What each item of a batch is booked at; the shares sum to `total` exactly."""

    total: Decimal
    shares: dict[str, Decimal]
    source: CostSource


def apportion(total: Decimal, weights: dict[str, int]) -> dict[str, Decimal]:
    """`total` split by `weights` in units of 1e-12 USD (the store's places), summing to it
    exactly: each item gets its floor; the units left over go one each to the largest
    remainders, ties by custom_id (deterministic). All-zero weights split evenly."""
    if not weights:
        return {}
    units = int((total / USD_PLACES).to_integral_value(rounding=ROUND_CEILING))
    w = weights if any(weights.values()) else dict.fromkeys(weights, 1)
    whole = sum(w.values())
    base = {k: units * v // whole for k, v in w.items()}
    left = units - sum(base.values())
    order = sorted(w, key=lambda k: (-(units * w[k] % whole), k))
    for k in order[:left]:
        base[k] += 1
    return {k: Decimal(v) * USD_PLACES for k, v in base.items()}


def settle(
    items: dict[str, ItemResult], ids: Sequence[str], batch_cost: Decimal | None,
    reserved: Decimal, *, unknown: bool = False, worst: dict[str, Decimal] | None = None,
) -> Bill:  # fmt: skip
    """The batch's bill onto its items (`ids` every custom_id it held).

    Per-item `usage.cost` when every answered item has one and they add up to at least the
    batch's cost (which of the two the balance paid is not documented: the larger is booked);
    else the batch's `usage.cost` apportioned by tokens (`batch_apportioned`); else, no cost
    reported at all or one that is not the bill (`unknown`: BYOK without the provider's
    charge), the batch's `reserved` worst case (`reserved`): never under the bill.
    (Before, tokens × price: $0 for items without `usage`, as in a recorded Anthropic result.)

    A reservation is split by each item's own `worst` case (by tokens without it), not by
    tokens: /generation later replaces an answered item's share with its real cost, and an
    item without an answer (no line, or one without its custom_id) may still have been billed,
    so its share must stand for its bill alone. By tokens it was $0, and once the answered
    items were fixed the books said less than the bill."""
    if unknown:
        batch_cost = reserved
    tokens = {
        i: (r.completion.usage.prompt_tokens + r.completion.usage.completion_tokens)
        if (r := items.get(i)) is not None and r.completion is not None
        else 0
        for i in ids
    }
    known = set(ids)
    answered = [r.completion for r in items.values() if r.completion is not None]
    per_item = [c.usage.billed for c in answered]
    # every item of ours answered, and no line of someone else's (its cost is in the bill too)
    every = known >= items.keys() and all(
        i in items and items[i].completion is not None for i in ids
    )
    if answered and all(p is not None and p.is_finite() and p >= 0 for p in per_item):
        shares = {i: Decimal(0) for i in ids}
        for r in items.values():
            if r.completion is not None and r.custom_id in known:
                shares[r.custom_id] = r.completion.usage.billed or Decimal(0)
        total = sum(shares.values(), Decimal(0))
        if (batch_cost is None and every) or (batch_cost is not None and total >= batch_cost):
            return Bill(total, shares, CostSource.OPENROUTER)
    if not unknown and batch_cost is not None and batch_cost.is_finite() and batch_cost >= 0:
        return Bill(batch_cost, apportion(batch_cost, tokens), CostSource.BATCH_APPORTIONED)
    weights = tokens if worst is None else {i: int(worst[i] / USD_PLACES) for i in ids}
    return Bill(reserved, apportion(reserved, weights), CostSource.RESERVED)


def worst_items(plan: RunPlan, model: str, items: Iterable[tuple[str, int]]) -> dict[str, Decimal]:
    """Each item's (custom_id, prompt bound) worst case at `model`: what its batch reserved
    for it, the weights a reservation is split by (`settle`)."""
    return {cid: plan.worst_call((model,), bound) for cid, bound in items}


def amount(raw: Any) -> Decimal | None:
    """A reported amount (number or numeric string) rounded up to the store's 12 places (never
    stored below the bill); None if it is none."""
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        return None
    try:
        return ceil_usd(Decimal(repr(raw)) if isinstance(raw, float) else Decimal(raw))
    except ArithmeticError:
        return None


def batch_cost(raw: Any) -> tuple[Decimal | None, bool]:
    """(what the batch's `usage` says it billed, whether that is unknowable). Under BYOK
    `usage.cost` is only OpenRouter's fee: the provider's charge to the user's key
    (`cost_details.upstream_inference_cost`) is added; BYOK without it is unknowable (the
    caller books the reservation: never under the bill)."""
    if not isinstance(raw, dict):
        return None, False
    fee = amount(raw.get("cost"))
    details = raw.get("cost_details")
    upstream = amount(details.get("upstream_inference_cost")) if isinstance(details, dict) else None
    if not byok_of(raw.get("is_byok"), fee, upstream):  # older shapes omit the flag
        return fee, False
    if fee is None or upstream is None:
        return None, True
    return fee + upstream, False
