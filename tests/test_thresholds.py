"""The cost dial's cut points (batchroute/thresholds.py): shares, costs, ties, bad arguments."""

from __future__ import annotations

import itertools
import random
from collections import Counter
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchroute.thresholds import (
    DEFAULT_POLICY,
    calibrate,
    side_fractions,
    tier_index,
    tier_shares,
)

COSTS = [Decimal("0.00008"), Decimal("0.00025"), Decimal("0.00042"), Decimal("0.005")]


def _scores(n: int, seed: int = 1) -> list[float]:
    rng = random.Random(seed)
    return [rng.betavariate(2, 5) for _ in range(n)]


def _tiers(scores: list[float], cuts: tuple[float, ...]) -> Counter[int]:
    return Counter(tier_index(s, cuts) for s in scores)


def test_tier_index_counts_the_cuts_at_or_below_the_score() -> None:
    cuts = (0.2, 0.5, 0.8)
    assert [tier_index(s, cuts) for s in (0.0, 0.2, 0.49, 0.5, 0.79, 0.8, 1.0)] == [
        0,
        1,
        1,
        2,
        2,
        3,
        3,
    ]
    assert tier_index(0.7, ()) == 0


@pytest.mark.parametrize("share", [0.0, 0.1, 0.3, 0.35, 0.5, 0.9, 1.0])
def test_strong_share_is_hit_within_3_percent_on_10k_records(share: float) -> None:
    scores = _scores(10_000)
    cuts = calibrate(scores, 4, strong_share=share)
    counts = _tiers(scores, cuts)
    strong = (counts[2] + counts[3]) / len(scores)
    assert abs(strong - share) <= 0.03, (share, strong, cuts)


def test_the_spread_inside_each_side_follows_the_side_weights() -> None:
    scores = _scores(10_000, seed=2)
    cuts = calibrate(scores, 4, strong_share=0.3)
    counts = _tiers(scores, cuts)
    expected = tier_shares(0.3, 4)
    for tier, want in enumerate(expected):
        assert abs(counts[tier] / 10_000 - want) <= 0.01, (tier, counts, expected)
    # a stronger tier gets higher scores than every weaker one (tiers left empty aside)
    by_tier = [[s for s in scores if tier_index(s, cuts) == t] for t in range(4)]
    used = [t for t in by_tier if t]
    assert all(max(a) < min(b) for a, b in itertools.pairwise(used))
    # with three tiers a side (six tiers), the 1:1:3 spread fills every tier
    cuts6 = calibrate(scores, 6, strong_share=0.3)
    assert sorted(_tiers(scores, cuts6)) == list(range(6))


def test_max_cost_ratio_spends_at_most_that_share_of_all_on_top() -> None:
    scores = _scores(10_000, seed=3)
    for ratio in (0.05, 0.2, 0.45, 0.8):
        cuts = calibrate(scores, 4, max_cost_ratio=ratio, tier_costs=COSTS)
        cost = sum(COSTS[tier_index(s, cuts)] for s in scores)
        assert cost / (COSTS[-1] * len(scores)) <= Decimal(str(ratio)) + Decimal("0.01")
        # and nearly all of it is used (the dial is not needlessly stingy), up to what the
        # spread can spend at all (every record on the strong side)
        ceiling = sum(c * Decimal(f) for c, f in zip(COSTS, tier_shares(1.0, 4), strict=True))
        reachable = min(Decimal(str(ratio)), ceiling / COSTS[-1])
        assert cost / (COSTS[-1] * len(scores)) >= reachable - Decimal("0.03")


def test_a_ratio_below_the_cheap_side_cost_sends_nothing_strong() -> None:
    scores = _scores(1000)
    cuts = calibrate(scores, 4, max_cost_ratio=0.0, tier_costs=COSTS)
    assert all(tier_index(s, cuts) < 2 for s in scores)


def test_ties_are_not_split_and_land_on_the_nearer_side() -> None:
    scores = [0.5] * 80 + [0.9] * 20
    cuts = calibrate(scores, 2, strong_share=0.3)
    assert _tiers(scores, cuts) == Counter({0: 80, 1: 20})
    cuts = calibrate(scores, 2, strong_share=0.9)
    assert _tiers(scores, cuts) == Counter({1: 100})


def test_no_scores_uses_a_uniform_prior() -> None:
    cuts = calibrate([], 2, strong_share=0.3)
    assert cuts == pytest.approx((0.7,))


def test_one_tier_has_no_cuts_and_three_tiers_default_to_one_weak_tier() -> None:
    assert calibrate([0.1, 0.9], 1, strong_share=0.5) == ()
    scores = _scores(3000)
    counts = _tiers(scores, calibrate(scores, 3, strong_share=0.5))
    assert abs(counts[0] / 3000 - 0.5) <= 0.01


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one"),
        ({"strong_share": 0.3, "max_cost_ratio": 0.3}, "exactly one"),
        ({"strong_share": 1.5}, "strong_share"),
        ({"strong_share": float("nan")}, "strong_share"),
        ({"max_cost_ratio": 0.3}, "tier_costs"),
        ({"max_cost_ratio": 0.3, "tier_costs": COSTS[:2]}, "tier_costs"),
        ({"max_cost_ratio": 0.3, "tier_costs": [Decimal(0)] * 4}, "tier_costs"),
        ({"strong_share": 0.3, "strong_from": 4}, "strong_from"),
        ({"strong_share": 0.3, "strong_from": 0}, "strong_from"),
    ],
)
def test_bad_arguments_raise_a_clear_value_error(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        calibrate([0.1, 0.2], 4, **kwargs)  # type: ignore[arg-type]


def test_bad_scores_and_tier_counts_are_named() -> None:
    with pytest.raises(ValueError, match=r"scores\[1\]"):
        calibrate([0.1, float("inf")], 2, strong_share=0.5)
    with pytest.raises(ValueError, match="n_tiers"):
        calibrate([0.1], 0, strong_share=0.5)


def test_default_policy_is_a_valid_dial() -> None:
    assert len(DEFAULT_POLICY) == 1
    (key, value), *_ = DEFAULT_POLICY.items()
    assert key in {"strong_share", "max_cost_ratio"}
    assert 0 < value < 1
    calibrate(_scores(100), 4, **DEFAULT_POLICY)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(
    scores=st.lists(st.floats(0, 1, allow_nan=False), max_size=300),
    n_tiers=st.integers(1, 6),
    share=st.floats(0, 1),
)
def test_cuts_ascend_and_more_share_never_sends_fewer_records_up(
    scores: list[float], n_tiers: int, share: float
) -> None:
    cuts = calibrate(scores, n_tiers, strong_share=share)
    assert len(cuts) == n_tiers - 1
    assert list(cuts) == sorted(cuts)
    assert all(0 <= tier_index(s, cuts) < n_tiers for s in scores)
    more = calibrate(scores, n_tiers, strong_share=min(1.0, share + 0.2))
    for s in scores:  # a record never moves down when the dial asks for more strong
        assert tier_index(s, more) >= tier_index(s, cuts) or n_tiers == 1
    # calibration is a function of the multiset of scores: order does not matter
    assert calibrate(list(reversed(scores)), n_tiers, strong_share=share) == cuts


@settings(max_examples=100, deadline=None)
@given(scores=st.lists(st.floats(0, 1, allow_nan=False), min_size=1, max_size=300))
def test_higher_scores_never_get_cheaper_tiers(scores: list[float]) -> None:
    cuts = calibrate(scores, 4, strong_share=0.4)
    ranked = sorted(scores)
    tiers = [tier_index(s, cuts) for s in ranked]
    assert tiers == sorted(tiers)


def test_side_fractions_sum_to_one() -> None:
    for n in range(1, 7):
        assert sum(side_fractions(n)) == pytest.approx(1.0)


def test_with_four_tiers_the_dial_uses_mid_and_premium_only() -> None:
    # the spread chosen by RouterBench-train CV (module docstring): budget and standard idle
    scores = _scores(10_000, seed=5)
    counts = _tiers(scores, calibrate(scores, 4, strong_share=0.3))
    assert counts[0] == counts[2] == 0
    assert abs(counts[3] / len(scores) - 0.3) <= 0.03


def test_the_default_policy_is_a_strong_share_under_the_cost_target() -> None:
    assert set(DEFAULT_POLICY) == {"strong_share"}
    assert 0 < DEFAULT_POLICY["strong_share"] < 0.5
