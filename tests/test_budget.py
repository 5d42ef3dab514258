"""Budget arithmetic: the cap holds under any interleaving of reserve, settle and release."""

from __future__ import annotations

from decimal import Decimal

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
