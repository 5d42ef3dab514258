"""Budget arithmetic: the cap holds under any interleaving of reserve, settle and release."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchroute.budget import Budget, prompt_token_bound, worst_case_cost
from batchroute.catalog import Catalog

money = st.decimals(min_value=0, max_value=Decimal("0.5"), places=12, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(
    cap=st.decimals(min_value=Decimal("0.01"), max_value=5, places=6),
    ops=st.lists(
        st.tuples(st.sampled_from(["reserve", "settle", "release"]), money, st.floats(0, 1)),
        max_size=200,
    ),
)
def test_settled_spend_never_exceeds_the_cap(cap: Decimal, ops: list) -> None:
    b = Budget(cap)
    open_: list = []
    for op, amount, frac in ops:
        if op == "reserve":
            r = b.try_reserve(amount)
            if r is None:
                assert not b.fits(amount)
            else:
                open_.append(r)
        elif open_:
            r = open_.pop(int(frac * (len(open_) - 1)))
            if op == "settle":
                # The actual cost is anything up to the reservation.
                b.settle(r, (r.amount * Decimal(str(round(frac, 6)))).quantize(Decimal("1e-12")))
            else:
                b.release(r)
        assert b.spent + b.reserved <= cap
        assert b.spent <= cap
        assert b.in_flight == len(open_)
        assert b.reserved == sum((r.amount for r in open_), Decimal(0))
    assert b.overruns == 0


def test_could_fit_tells_waiting_from_never_fitting() -> None:
    b = Budget(Decimal("1.00"))
    r = b.try_reserve(Decimal("0.80"))
    assert r is not None
    assert b.try_reserve(Decimal("0.30")) is None
    assert b.could_fit(Decimal("0.30"))  # wait: the call in flight may settle lower
    b.settle(r, Decimal("0.10"))
    assert b.try_reserve(Decimal("0.30")) is not None
    b2 = Budget(Decimal("1.00"), spent=Decimal("0.95"))
    assert not b2.could_fit(Decimal("0.06"))  # waiting cannot help: the record waits a day
    assert not b2.exceeds_cap(Decimal("0.06"))
    assert b2.exceeds_cap(Decimal("1.01"))  # no day could send it


def test_spent_carried_in_from_the_store() -> None:
    b = Budget(Decimal(2), spent=Decimal("1.5"))
    assert b.remaining == Decimal("0.5")


def test_a_batch_out_is_left_room_for_until_it_lands_then_no_longer() -> None:
    """Cap $100; the key has $20 left and an earlier run's batch, reserved $8, is still out:
    the limit is $12. Once the batch is collected (billed $1, in the key's usage now), a
    re-read of the key ($19 left) keeps $12 (a ceiling only ever lowers within a run); a
    later read ($10 left: others spent $9) gives $10. Before (the stop-24 review): $11, then
    $2: the batch's room left again at every read, down to a false `budget_exhausted`."""
    b = Budget(Decimal(100))
    b.unbilled(Decimal(8))
    b.lower_ceiling(Decimal(20))
    assert b.limit == Decimal(12)
    b.landed(Decimal(8))
    b.lower_ceiling(Decimal(19))
    assert b.limit == Decimal(12)
    b.lower_ceiling(Decimal(10))
    assert b.limit == Decimal(10)
    b.landed(Decimal(5))  # never below nothing
    assert b.out == 0


def test_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="positive"):
        Budget(Decimal(0))
    with pytest.raises(ValueError, match="negative"):
        Budget(Decimal(1)).try_reserve(Decimal(-1))


@given(st.lists(st.text(max_size=200), min_size=1, max_size=4))
def test_prompt_bound_is_at_least_the_bytes(contents: list[str]) -> None:
    assert prompt_token_bound(contents) >= sum(len(c.encode()) for c in contents)


def test_worst_case_uses_exact_catalogue_prices() -> None:
    mini = Catalog.shipped().get("openai/gpt-4o-mini")
    assert mini is not None
    # 0.00000015 per prompt token, 0.0000006 per completion token (May 2026 snapshot).
    list_price = Decimal("0.00015") + Decimal("0.0003072")
    assert worst_case_cost(mini, 1000, 512) == list_price * Decimal("1.05")  # BYOK fee
    assert worst_case_cost(mini, 1000, 512, searches=2) == (list_price + 2 * Decimal("0.02")) * (
        Decimal("1.05")
    )


def _catalog(*models: dict[str, object]) -> Catalog:
    return Catalog(orjson.dumps({"data": list(models)}), source="test", fetched_at="2026-05-28")


def test_worst_case_counts_reasoning_overrides_and_the_request_fee() -> None:
    """Every charge a catalogue entry can make goes into the worst case. Expectations worked
    out by hand from the prices below, per 1000 prompt and 100 completion tokens."""
    cat = _catalog(
        {  # internal_reasoning is the dearest output price; an override raises prompt and fee
            "id": "t/reasoner",
            "context_length": 400_000,
            "pricing": {
                "prompt": "0.000003",
                "completion": "0.000015",
                "request": "0.0004",
                "internal_reasoning": "0.00004",
                "overrides": [
                    {"min_prompt_tokens": 200_000, "prompt": "0.000006", "completion": "0.0000225"},
                    {"pricing": {"request": "0.0005"}},  # nested: any shape naming the key
                ],
            },
        },
        {  # a long-context override is the dearest output price, above internal_reasoning
            "id": "t/long",
            "context_length": 1_000_000,
            "pricing": {
                "prompt": "0.000001",
                "completion": "0.000002",
                "internal_reasoning": "0.00001",
                "overrides": [{"prompt": "0.000002", "completion": "0.00003"}],
            },
        },
        {  # no overrides, no reasoning: list prices plus the fee per request
            "id": "t/plain",
            "context_length": 8_000,
            "pricing": {"prompt": "0.0000005", "completion": "0.0000015", "request": "0.001"},
        },
    )
    reasoner, long, plain = (cat.get(m) for m in ("t/reasoner", "t/long", "t/plain"))
    assert reasoner is not None
    assert long is not None
    assert plain is not None
    # t/reasoner: 1000 × 0.000006 (override) + 100 × 0.00004 (reasoning) + 0.0005 (override fee)
    #           = 0.006 + 0.004 + 0.0005 = 0.0105
    assert reasoner.worst_cost(1000, 100) == Decimal("0.0105")
    # t/long: 1000 × 0.000002 + 100 × 0.00003 + 0 = 0.002 + 0.003 = 0.005
    assert long.worst_cost(1000, 100) == Decimal("0.005")
    # t/plain: 1000 × 0.0000005 + 100 × 0.0000015 + 0.001 = 0.0005 + 0.00015 + 0.001
    assert plain.worst_cost(1000, 100) == Decimal("0.00165")
    # The reservation adds the 5 % BYOK fee (an account setting nobody sees before the answer).
    assert worst_case_cost(reasoner, 1000, 100) == Decimal("0.011025")
    assert worst_case_cost(long, 1000, 100) == Decimal("0.00525")
    assert worst_case_cost(plain, 1000, 100) == Decimal("0.0017325")
    # A model missing from the catalogue is priced at the dearest of every kind at once:
    # 1000 × 0.000006 + 100 × 0.00004 + 0.001 = 0.011, × 1.05.
    assert worst_case_cost(cat.dearest(), 1000, 100) == Decimal("0.01155")
