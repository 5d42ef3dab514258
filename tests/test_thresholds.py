"""The cost dial (batchroute/thresholds.py): λ calibration for a share or a cost ratio, the
level → tier mapping, ties, bad arguments."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchroute.thresholds import (
    DEFAULT_POLICY,
    LEVELS,
    Dial,
    Point,
    calibrate,
    choose,
    for_tiers,
    tier_levels,
)

# RouterBench's mean cost per call of mistral-7b, mixtral, gpt-3.5 and gpt-4 (cheapest first)
PER_CALL = (0.00008, 0.00025, 0.00042, 0.005)
PER_TOKEN = (0.0, 0.0, 0.0, 0.0)


def _points(n: int, seed: int = 1, tiers: int = 4) -> list[Point]:
    """Records whose quality rises with the tier, by a random amount per record."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        base = rng.random() * 0.6
        steps = [rng.random() * 0.2 for _ in range(tiers)]
        q = tuple(base + sum(steps[: i + 1]) for i in range(tiers))
        f = tuple(rng.uniform(0.5, 2.0) for _ in range(tiers))
        out.append(Point(q, f, rng.randrange(10, 2000)))
    return out


def _tiers(dial: Dial, points: list[Point]) -> list[int]:
    return [dial.tier(p.quality, p.factor, p.tokens) for p in points]


def _cost_ratio(dial: Dial, points: list[Point]) -> float:
    spent = top = 0.0
    for p in points:
        costs = dial.costs(p.factor, p.tokens)
        spent += costs[dial.tier(p.quality, p.factor, p.tokens)]
        top += costs[-1]
    return spent / top


def test_levels_map_onto_a_jobs_tiers_from_the_top() -> None:
    assert LEVELS == ("budget", "mid", "standard", "premium")
    assert [tier_levels(n) for n in range(1, 7)] == [
        (3,),
        (1, 3),
        (1, 2, 3),
        (0, 1, 2, 3),
        (0, 0, 1, 2, 3),
        (0, 0, 0, 1, 2, 3),
    ]
    assert for_tiers((0.1, 0.2, 0.3, 0.4), 2) == (0.2, 0.4)


def test_choose_maximises_quality_minus_lambda_cost_and_ties_go_cheaper() -> None:
    assert choose((0.5, 0.9), (1.0, 2.0), 0.0) == 1
    assert choose((0.5, 0.9), (1.0, 2.0), 0.4) == 0  # 0.9 - 0.8 < 0.5 - 0.4
    assert choose((0.5, 0.9), (1.0, 2.0), 0.3) == 1
    assert choose((0.7, 0.7), (1.0, 2.0), 0.0) == 0  # a tie: the cheaper tier
    assert choose((0.1, 0.9, 0.95), (3.0, 1.0, 2.0), math.inf) == 1  # ∞: the cheapest


@pytest.mark.parametrize("share", [0.0, 0.1, 0.3, 0.35, 0.5, 0.9, 1.0])
def test_strong_share_is_hit_within_3_percent_on_10k_records(share: float) -> None:
    points = _points(10_000)
    dial = calibrate(points, PER_CALL, PER_TOKEN, strong_share=share)
    tiers = _tiers(dial, points)
    strong = sum(t >= 2 for t in tiers) / len(points)
    assert abs(strong - share) <= 0.03, (share, strong, dial.lam)


@pytest.mark.parametrize("ratio", [0.05, 0.1, 0.3, 0.45, 0.7])
def test_max_cost_ratio_spends_at_most_that_share_of_all_on_top_and_nearly_all_of_it(
    ratio: float,
) -> None:
    points = _points(3_000, seed=3)
    per_token = (1e-8, 3e-8, 5e-8, 1e-6)
    dial = calibrate(points, PER_CALL, per_token, max_cost_ratio=ratio)
    got = _cost_ratio(dial, points)
    assert got <= ratio + 1e-9
    assert got >= ratio - 0.01, (ratio, got)  # the smallest λ: the budget is used


def test_a_ratio_below_the_cheapest_cost_sends_each_record_to_its_cheapest_tier() -> None:
    points = _points(200)
    dial = calibrate(points, PER_CALL, PER_TOKEN, max_cost_ratio=0.001)
    assert dial.lam == math.inf
    for p, t in zip(points, _tiers(dial, points), strict=True):
        costs = dial.costs(p.factor, p.tokens)
        assert costs[t] == min(costs)


def test_a_record_whose_cheap_tier_is_as_good_as_the_dear_one_never_goes_dear() -> None:
    """MBPP's case: gpt-3.5 answers as well as gpt-4 there at a twelfth of the price, so at any
    dial short of "quality whatever it costs" such a record stops at standard."""
    same = Point((0.3, 0.5, 0.7, 0.7), (1.0, 1.0, 1.0, 1.0), 100)
    points = [same, *_points(500)]
    for share in (0.1, 0.5, 0.9):
        dial = calibrate(points, PER_CALL, PER_TOKEN, strong_share=share)
        assert dial.tier(same.quality, same.factor, same.tokens) != 3


def test_no_points_or_one_tier_give_the_ends() -> None:
    assert calibrate([], PER_CALL, PER_TOKEN, strong_share=1.0).lam == 0.0
    assert calibrate([], PER_CALL, PER_TOKEN, strong_share=0.3).lam == math.inf
    one = [Point((0.5,), (1.0,), 10)]
    assert calibrate(one, (0.1,), (0.0,), max_cost_ratio=0.4).tier((0.5,), (1.0,), 10) == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one"),
        ({"strong_share": 0.3, "max_cost_ratio": 0.4}, "exactly one"),
        ({"strong_share": 1.5}, "strong_share must be a number between 0 and 1"),
        ({"strong_share": True}, "strong_share must be a number"),
        ({"max_cost_ratio": -0.1}, "max_cost_ratio must be a number between 0 and 1"),
        ({"strong_share": 0.3, "strong_first": 9}, "strong_from must be between 0 and 3"),
    ],
)
def test_bad_arguments_raise_a_clear_value_error(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        calibrate(_points(10), PER_CALL, PER_TOKEN, **kwargs)  # type: ignore[arg-type]


def test_bad_points_and_prices_are_named() -> None:
    with pytest.raises(ValueError, match=r"points\[1\] must have one quality"):
        calibrate([*_points(1), Point((0.5,), (1.0,), 1)], PER_CALL, PER_TOKEN, strong_share=0.5)
    bad = Point((0.1, math.nan, 0.3, 0.4), (1.0,) * 4, 1)
    with pytest.raises(ValueError, match=r"points\[0\] must hold finite"):
        calibrate([bad], PER_CALL, PER_TOKEN, strong_share=0.5)
    with pytest.raises(ValueError, match="one price per tier"):
        calibrate(_points(2), PER_CALL, (0.0,), strong_share=0.5)
    with pytest.raises(ValueError, match="finite and ≥ 0"):
        calibrate(_points(2), (0.1, -1.0, 0.2, 0.3), PER_TOKEN, strong_share=0.5)
    with pytest.raises(ValueError, match="n_tiers must be"):
        tier_levels(0)


def test_the_default_policy_is_one_valid_cost_dial() -> None:
    assert len(DEFAULT_POLICY) == 1
    (key, value), *_ = DEFAULT_POLICY.items()
    assert key in {"strong_share", "max_cost_ratio"}
    assert 0 < value < 1
    calibrate(
        _points(100),
        PER_CALL,
        PER_TOKEN,
        strong_share=DEFAULT_POLICY.get("strong_share"),
        max_cost_ratio=DEFAULT_POLICY.get("max_cost_ratio"),
    )


@settings(max_examples=60, deadline=None)
@given(n_tiers=st.integers(2, 6), seed=st.integers(0, 10_000), a=st.floats(0, 1), b=st.floats(0, 1))
def test_a_dearer_dial_never_sends_a_record_to_a_cheaper_tier(
    n_tiers: int, seed: int, a: float, b: float
) -> None:
    """More share asked (a smaller λ) moves records up or leaves them: never down. That is
    what makes the share and the cost monotone in λ, so the bisection sound."""
    points = _points(150, seed=seed, tiers=n_tiers)
    calls = tuple(0.0001 * 3**i for i in range(n_tiers))
    zero = (0.0,) * n_tiers
    lo, hi = sorted((a, b))
    d_lo = calibrate(points, calls, zero, strong_share=lo)
    d_hi = calibrate(points, calls, zero, strong_share=hi)
    assert d_hi.lam <= d_lo.lam
    for t_lo, t_hi in zip(_tiers(d_lo, points), _tiers(d_hi, points), strict=True):
        assert t_hi >= t_lo
