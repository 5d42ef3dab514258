"""What a job's request fields add to each call's worst case (`budget.CallTerms`), pure.

The end-to-end reproductions (real CLI, a stand-in billing as the docs say) are in
`test_audit_request_bill.py`; these pin the arithmetic and the validation by hand.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from factories import make_spec

from batchroute.budget import BYOK_FEE, cache_ttl, call_terms, ceil_usd
from batchroute.catalog import Catalog
from batchroute.errors import SpecError
from batchroute.plan import Overrides, build_plan
from batchroute.runner.cost import Pricer
from batchroute.types import Completion, CostSource, ResumeState, Usage

SONNET = "anthropic/claude-sonnet-4.5"  # shipped: prompt 0.000003, completion 0.000015

CLAUDE = {  # the snapshot's claude-sonnet-4.5 prices
    "id": "t/claude",
    "context_length": 200_000,
    "pricing": {
        "prompt": "0.000003",
        "completion": "0.000015",
        "input_cache_read": "0.0000003",
        "input_cache_write": "0.00000375",
    },
}
LISTED_1H = {
    "id": "t/listed",
    "context_length": 200_000,
    "pricing": {
        "prompt": "0.000001",
        "completion": "0.000002",
        "input_cache_write": "0.00000125",
        "input_cache_write_1h": "0.000003",  # above twice the prompt price: the listed one wins
    },
}
NO_WRITES = {
    "id": "t/implicit",
    "context_length": 128_000,
    "pricing": {"prompt": "0.000001", "completion": "0.000002", "input_cache_read": "0.0000005"},
}


def _catalog() -> Catalog:
    doc = {"data": [CLAUDE, LISTED_1H, NO_WRITES]}
    return Catalog(orjson.dumps(doc), source="test", fetched_at="2026-12-07")


def test_a_cache_write_prices_every_prompt_token_at_the_write_price() -> None:
    cat = _catalog()
    claude, listed, implicit = (cat.get(m) for m in ("t/claude", "t/listed", "t/implicit"))
    assert claude is not None
    assert listed is not None
    assert implicit is not None
    # 1000 prompt tokens, 100 completion tokens, by hand:
    assert claude.worst_cost(1000, 100) == Decimal("0.0045")  # 0.003 + 0.0015
    assert claude.worst_cost(1000, 100, cache_ttl="5m") == Decimal("0.00525")  # 0.00375 + ...
    assert claude.worst_cost(1000, 100, cache_ttl="1h") == Decimal("0.0075")  # 2 × 0.003 + ...
    assert listed.worst_cost(1000, 100, cache_ttl="1h") == Decimal("0.0032")  # 0.003 + 0.0002
    # A model that lists no write price bills no writes: its worst case does not move.
    assert implicit.worst_cost(1000, 100, cache_ttl="1h") == implicit.worst_cost(1000, 100)
    # A model missing from the catalogue is priced as the dearest: its writes included.
    dearest = cat.dearest()
    assert dearest.cache_write == Decimal("0.00000375")
    assert dearest.cache_write_1h == Decimal("0.000003")


@pytest.mark.parametrize(
    ("params", "ttl"),
    [
        ({"max_tokens": 5}, None),
        ({"cache_control": {"type": "ephemeral"}}, "5m"),
        ({"cache_control": {"type": "ephemeral", "ttl": "5m"}}, "5m"),
        ({"cache_control": {"type": "ephemeral", "ttl": "1h"}}, "1h"),
        ({"cache_control": "ephemeral"}, "5m"),  # not the documented shape: still a write
        # inside a tool definition, the longest TTL anywhere counts
        (
            {
                "cache_control": {"type": "ephemeral"},
                "tools": [{"function": {"name": "f"}, "cache_control": {"ttl": "1h"}}],
            },
            "1h",
        ),
    ],
)
def test_cache_ttl_finds_a_cache_control_anywhere(params: dict[str, Any], ttl: str | None) -> None:
    assert cache_ttl(params) == ttl


def test_a_reasoning_budget_is_added_to_max_tokens() -> None:
    assert call_terms({"max_tokens": 256}).completion_tokens == 256
    assert call_terms({"max_tokens": 256, "reasoning": {"effort": "high"}}).completion_tokens == 256
    terms = call_terms({"max_tokens": 256, "reasoning": {"max_tokens": 2048}})
    assert terms.completion_tokens == 2304
    # A budget below Anthropic's smallest (1024) may be raised to it.
    terms = call_terms({"max_tokens": 256, "reasoning": {"max_tokens": 100}})
    assert terms.completion_tokens == 256 + 1024
    assert call_terms({"max_tokens": 256, "reasoning": {"max_tokens": 0}}).completion_tokens == 256


def test_the_plan_reserves_the_cache_write_and_the_reasoning_budget(tmp_path: Path) -> None:
    cat = _catalog()
    extra = {"cache_control": {"type": "ephemeral", "ttl": "1h"}, "reasoning": {"max_tokens": 1900}}
    request = {"max_tokens": 100, "extra_body": extra}
    spec = make_spec(tmp_path, tiers={"mid": ["t/claude"]}, request=request)
    plan = build_plan(spec, cat, ResumeState(), Overrides())
    # 1000 prompt tokens at twice 0.000003 + (100 + 1900) tokens at 0.000015, plus the BYOK fee
    call = (1000 * Decimal("0.000006") + 2000 * Decimal("0.000015")) * (1 + BYOK_FEE)
    assert plan.worst_call(("t/claude",), 1000) == ceil_usd(call)
    # A reported usage without a cost is priced the same way (never below the bill).
    info = cat.get("t/claude")
    assert info is not None
    priced = plan.terms.priced(info, "t/claude", 1000, 2000, 0)
    assert priced == ceil_usd(call)


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ({"service_tier": "fast"}, "service_tier 'fast'"),
        ({"service_tier": "scale"}, "service_tier 'scale'"),
        ({"reasoning": {"max_tokens": "2k"}}, "reasoning.max_tokens"),
        ({"reasoning": {"max_tokens": True}}, "reasoning.max_tokens"),
        ({"reasoning": "high"}, "reasoning must be a mapping"),
    ],
)
def test_fields_whose_bill_cannot_be_bounded_are_refused(
    tmp_path: Path, extra: dict[str, Any], words: str
) -> None:
    with pytest.raises(SpecError, match=words):
        make_spec(tmp_path, request={"max_tokens": 100, "extra_body": extra})


@pytest.mark.parametrize("tier", ["auto", "default", "flex", "priority"])
def test_service_tiers_with_a_known_price_are_accepted(tmp_path: Path, tier: str) -> None:
    spec = make_spec(tmp_path, request={"max_tokens": 100, "extra_body": {"service_tier": tier}})
    assert spec.request.extra_body == {"service_tier": tier}


@pytest.mark.parametrize(
    ("model", "extra", "bill"),
    [
        # every prompt token written to the cache at input_cache_write (0.00000375)
        (SONNET, {"cache_control": {"type": "ephemeral"}}, Decimal("0.00525")),
        # a priority-tier endpoint: twice the list price (0.003 + 0.0015)
        (f"{SONNET}:nitro", {}, Decimal("0.009")),
    ],
)
def test_an_answer_priced_from_its_tokens_is_never_below_the_bill(
    tmp_path: Path, model: str, extra: dict[str, Any], bill: Decimal
) -> None:
    """An answer with token counts but no cost (older API shapes) is priced from the tokens:
    it was priced at the list prices, below a cache write's or a priority tier's bill
    ($0.004725 for both: 1000 prompt and 100 completion tokens, plus the BYOK fee)."""
    spec = make_spec(
        tmp_path, tiers={"mid": [model]}, request={"max_tokens": 100, "extra_body": extra}
    )
    pricer = Pricer(build_plan(spec, Catalog.shipped(), ResumeState(), Overrides()))
    usage = Usage(prompt_tokens=1000, completion_tokens=100)
    answer = Completion("ok", "stop", None, SONNET, None, "gen-1", usage)
    cost, source = pricer.answered(answer, model, pricer.worst(1000, (model,)), "mid")
    assert source is CostSource.CATALOG
    assert cost >= bill


def test_an_answer_a_nitro_fallback_may_have_served_is_priced_at_priority(tmp_path: Path) -> None:
    """With native fallback the request names `[SONNET, SONNET:nitro]` and the answer reports
    the model without its suffix: an answer with token counts but no cost was priced from the
    requested model's terms (x1) although the `:nitro` fallback may have served it at priority
    rates (x2; review). It is priced at the dearest terms of every model that may serve it."""
    tiers = {"mid": {"models": [SONNET, f"{SONNET}:nitro"], "native_fallback": True}}
    spec = make_spec(tmp_path, tiers=tiers, request={"max_tokens": 100})
    plan = build_plan(spec, Catalog.shipped(), ResumeState(), Overrides())
    _, models = plan.served_by("mid", SONNET)
    assert f"{SONNET}:nitro" in models
    pricer = Pricer(plan)
    usage = Usage(prompt_tokens=1000, completion_tokens=100)
    answer = Completion("ok", "stop", None, SONNET, None, "gen-1", usage)
    cost, source = pricer.answered(answer, SONNET, pricer.worst(1000, models), "mid")
    assert source is CostSource.CATALOG
    assert cost >= Decimal("0.009")  # 2 x (0.003 + 0.0015): a priority endpoint's bill


def test_a_second_overrun_raises_the_reservation_to_what_it_cost(tmp_path: Path) -> None:
    """A learnt ratio is relative to the list-price worst case. Before: a call already
    reserved at 3x its list price and billed 4x taught a ratio of 4/3 (relative to the scaled
    reservation), below the 3 already learnt, so later calls stayed reserved at 3x while
    costing 4x: the cap then let each of them through short by a third of its bill."""
    spec = make_spec(tmp_path, tiers={"mid": [SONNET]}, request={"max_tokens": 100})
    pricer = Pricer(build_plan(spec, Catalog.shipped(), ResumeState(), Overrides()))
    models = (SONNET,)
    listed = pricer.worst(1000, models)
    pricer.learn(SONNET, listed * 3, listed, listed)
    assert pricer.worst(1000, models) >= listed * 3
    pricer.learn(SONNET, listed * 4, *reversed(pricer.price(1000, models)))
    assert pricer.worst(1000, models) >= listed * 4
    # Another model's ratio scales a call both may serve: learning from it stays above.
    other = "openai/gpt-4o"
    both = (SONNET, other)
    both_listed, both_worst = pricer.price(1000, both)
    pricer.learn(other, both_worst * 2, both_worst, both_listed)
    assert pricer.worst(1000, (other,)) >= pricer._plan.worst_call((other,), 1000) * 2
    # The list price not known (None): cost / reservation x the largest ratio, never under.
    third = "openai/gpt-4o-mini"
    pricer.learn(third, pricer.worst(1000, (third,)) * 2, pricer.worst(1000, (third,)), None)
    assert pricer.worst(1000, (third,)) >= pricer._plan.worst_call((third,), 1000) * 2


def test_a_model_reserved_at_its_floor_and_billed_above_it_raises_the_floor(
    tmp_path: Path,
) -> None:
    """A model listed at $0 is reserved at the largest cost seen (its floor). Before: a call
    reserved at a $0.05 floor and billed $0.08 left the floor at $0.05 (the ratio learnt from
    it multiplies a $0 list price)."""
    spec = make_spec(tmp_path, tiers={"mid": [SONNET]}, request={"max_tokens": 100})
    pricer = Pricer(build_plan(spec, Catalog.shipped(), ResumeState(), Overrides()))
    pricer.learn(SONNET, Decimal("0.05"), Decimal(0), Decimal(0))  # as a $0-listed model would
    assert pricer.worst(1000, (SONNET,)) >= Decimal("0.05")
    pricer.learn(SONNET, Decimal("0.08"), *reversed(pricer.price(1000, (SONNET,))))
    assert pricer.worst(1000, (SONNET,)) >= Decimal("0.08")


def test_an_absurd_overrun_does_not_crash_the_run(tmp_path: Path) -> None:
    """A bookable cost (up to 10^15) against a tiny reservation: the ratio cost/reservation
    had more digits than Decimal's 28 and `quantize` raised InvalidOperation inside the run
    (seed, noticed). The ratio is now capped (`MAX_RATIO`): the model's later calls are
    reserved far above any cap, so they wait rather than crash the night."""
    spec = make_spec(tmp_path, tiers={"mid": [SONNET]}, request={"max_tokens": 100})
    pricer = Pricer(build_plan(spec, Catalog.shipped(), ResumeState(), Overrides()))
    tiny = Decimal("0.000000000001")
    pricer.learn(SONNET, Decimal(10) ** 15, tiny, tiny)
    assert pricer.worst(1000, (SONNET,)) > Decimal(1000)


def test_an_absurd_seeded_ratio_does_not_crash_the_run(tmp_path: Path) -> None:
    """The store may seed a ratio up to 10^27 (`store.ratios`, 60 digits there); a
    reservation at it has more digits than Decimal's 28 and pricing raised. Capped too."""
    spec = make_spec(tmp_path, tiers={"mid": [SONNET]}, request={"max_tokens": 100})
    resume = ResumeState(ratios={SONNET: Decimal(10) ** 27})
    pricer = Pricer(build_plan(spec, Catalog.shipped(), resume, Overrides()))
    assert pricer.worst(1000, (SONNET,)) > Decimal(1000)
