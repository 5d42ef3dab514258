"""Router: task → tier, complexity floors, native fallback options, cheapest-tier resolution."""

from __future__ import annotations

from pathlib import Path

from batchroute.catalog import Catalog
from batchroute.router import TierPlan, choose_tier, resolve_tiers
from batchroute.spec import JobSpec
from batchroute.types import Classification


def spec(**extra: object) -> JobSpec:
    base: dict[str, object] = {
        "name": "t",
        "input": Path("in.jsonl"),
        "prompt": {"user": "{text}"},
        "request": {"max_tokens": 64},
        "budget": {"daily_usd": 1},
    }
    base.update(extra)
    return JobSpec.model_validate(base)


def test_task_decides_when_given() -> None:
    s = spec()
    c = Classification("classification", "very_high", "task_field")
    assert choose_tier(c, s, explicit_task=True) == "budget"


def test_guessed_task_gets_a_complexity_floor() -> None:
    s = spec()
    assert choose_tier(Classification("simple_qa", "low", "r"), s, explicit_task=False) == "budget"
    assert choose_tier(Classification("simple_qa", "high", "r"), s, explicit_task=False) == "mid"
    hard = Classification("simple_qa", "very_high", "r")
    assert choose_tier(hard, s, explicit_task=False) == "standard"
    # Easy work never climbs above its task's tier, and hard work never drops below it.
    assert choose_tier(Classification("deep_reasoning", "low", "r"), s, explicit_task=False) == (
        "premium"
    )


def test_native_fallback_sends_at_most_three_models() -> None:
    plan = TierPlan(
        "t", ("a/1", "a/2", "a/3", "a/4"), native_fallback=True, provider={"sort": "price"}
    )
    body = plan.extra_body("a/2")
    assert body["models"] == ["a/2", "a/1", "a/3"]
    assert body["provider"] == {"sort": "price"}
    assert TierPlan("t", ("a/1",)).extra_body("a/1") == {}


def test_cheapest_tier_is_resolved_from_the_catalogue() -> None:
    s = spec(
        tiers={
            "cheap": {"cheapest": True, "count": 3, "min_context": 100_000, "needs": ["tools"]},
            "strong": ["openai/gpt-4o"],
        }
    )
    cat = Catalog.shipped()
    plans = resolve_tiers(s, cat)
    chosen = plans["cheap"].models
    assert len(chosen) == 3
    infos = [cat.get(m) for m in chosen]
    assert all(i is not None and i.context_length >= 100_000 for i in infos)
    assert all(i is not None and "tools" in i.supported_parameters for i in infos)
    assert all(i is not None and not i.is_free and not i.variable_price for i in infos)
    prices = [i.prompt + i.completion for i in infos if i is not None]
    assert prices == sorted(prices)
    # Nothing cheaper that fits was passed over.
    cheapest_fit = min(
        m.prompt + m.completion
        for m in cat.models.values()
        if m.context_length >= 100_000
        and "tools" in m.supported_parameters
        and not m.is_free
        and not m.variable_price
    )
    assert prices[0] == cheapest_fit
