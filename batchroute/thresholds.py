"""Score cut points for the tiers: the cost dial (issue 12). Pure functions, no I/O.

A scoring router gives each record a `score` in [0, 1], higher = send it stronger (the learned
router's is its expected quality gain from the premium tier per relative dollar, squashed). The
tiers are ordered cheapest first; `strong_from` is the index of the first *strong* tier
(default `n_tiers // 2`, i.e. standard and premium of the four default tiers). A record goes to tier
`tier_index(score, cuts) = bisect_right(cuts, score)`, so `cuts[i]` is the lowest score that
reaches tier `i + 1`.

`calibrate` picks the cuts on the input itself (RouteLLM's calibration), so a user asks for "about
30 % on the strong tiers" (`strong_share`) or "about 40 % of the cost of sending everything to the
top tier" (`max_cost_ratio`) instead of guessing a threshold.

How records spread over the tiers (the design decision the contract leaves to this module):

- the highest-scored `strong_share` of the records go to the strong tiers, the rest to the
  weak tiers;
- inside each side the records are shared out by score rank in the fixed proportions of
  `SIDE_WEIGHTS`: on the weak side, the lowest-scored fraction goes to the cheapest tier; on the
  strong side, the highest-scored fraction goes to the top tier. A side with one tier takes all.
  With the four default tiers the weights below put the whole weak side on mid and the whole
  strong side on premium: budget and standard get no records from the dial. That is what the
  data says: on RouterBench train the 7B-class budget model saves 3 % of all-premium's cost for
  15 accuracy points, and gpt-3.5-class standard is no more accurate than mixtral-class mid at
  1.7× its price. Cross-validated on RouterBench train (`python tools/train_router.py --cv
  score`), at strong share 0.45: 0:1 reaches 93.1 % of gpt-4's accuracy at 36.5 % of its cost,
  1:9 90.9 % at 32.1 %, 1:3 87.4 % at 27.3 %; at equal cost 0:1 stays ahead. A job whose cheap
  tiers differ (budget close to mid) may want another spread: these weights are the one place.
  A side of three tiers keeps the 1:1:3 spread (not evaluated: no public data with six tiers).
  `tools/eval_routing.py` imports this module, so the evaluation uses exactly this spread.

Because the proportions inside each side are fixed, the expected cost is linear in the strong
share, so `max_cost_ratio` is met in closed form: the largest strong share whose expected cost
(`tier_costs`, one record per tier) is at most `max_cost_ratio` × the top tier's. That assumes
every record costs the same; a run's plan does not (`split.share_for_cost` prices each record
at its own prompt length and asks this module for the cuts of the share it finds).

Ties: records with one score cannot be split, so a cut lands on whichever side of a run of equal
scores comes closer to the wanted count. With no scores at all the scores are taken as uniform on
[0, 1] (the cut for a strong share `s` is `1 - s`).
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from decimal import Decimal
from typing import Final

Cuts = tuple[float, ...]
"""Ascending score cut points, one fewer than there are tiers."""

DEFAULT_POLICY: dict[str, float] = {"strong_share": 0.45}
"""The default cost dial for a scoring classifier. Chosen on RouterBench-train cross-validation
(never a test split): the largest share, in steps of 0.05, whose cost stayed at most 40 % of
all-premium there (36.5 %; 0.5 gave 41.7 %), leaving 5 points for inputs that score
differently, under the issue's 45 % target. Held-out figures: docs/routing-eval.md."""

SIDE_WEIGHTS: Final[dict[int, tuple[float, ...]]] = {1: (1.0,), 2: (0.0, 1.0), 3: (1.0, 1.0, 3.0)}
"""Relative share of each tier inside one side (weak or strong), cheapest first, by the side's
tier count. The strong side uses the same weights (its top tier gets the largest share); sides
with more tiers than listed share equally."""


def tier_index(score: float, cuts: Cuts) -> int:
    """The tier (0 = cheapest) a record with `score` goes to: the number of cuts ≤ score."""
    return bisect_right(cuts, score)


def side_fractions(n: int) -> tuple[float, ...]:
    """The fraction of one side's records that each of its `n` tiers takes, cheapest first."""
    weights = SIDE_WEIGHTS.get(n, (1.0,) * n)
    total = sum(weights)
    return tuple(w / total for w in weights)


def tier_shares(strong_share: float, n_tiers: int, strong_from: int | None = None) -> list[float]:
    """The share of records each tier gets for a given strong share (before ties)."""
    k = _strong_from(n_tiers, strong_from)
    if n_tiers == 1:
        return [1.0]
    weak = [(1.0 - strong_share) * f for f in side_fractions(k)]
    strong = [strong_share * f for f in side_fractions(n_tiers - k)]
    return weak + strong


def calibrate(
    scores: Sequence[float],
    n_tiers: int,
    *,
    strong_share: float | None = None,
    max_cost_ratio: float | None = None,
    tier_costs: Sequence[Decimal] | None = None,
    strong_from: int | None = None,
) -> Cuts:
    """Cut points that send about `strong_share` of `scores` to the strong tiers.

    Or, with `max_cost_ratio` (and `tier_costs`, the expected cost of one record on each tier,
    cheapest first), the largest strong share whose expected cost is at most that fraction of
    sending every record to the top tier. Exactly one of the two is given.

    Raises:
        ValueError: a bad argument (the message names it).
    """
    k = _strong_from(n_tiers, strong_from)
    if (strong_share is None) == (max_cost_ratio is None):
        raise ValueError("give exactly one of strong_share and max_cost_ratio")
    if strong_share is not None:
        share = _fraction("strong_share", strong_share)
    else:
        assert max_cost_ratio is not None
        share = _share_for_cost(max_cost_ratio, tier_costs, n_tiers, k)
    if n_tiers == 1:
        return ()
    ordered = sorted(_checked(scores))
    shares = tier_shares(share, n_tiers, k)
    cuts: list[float] = []
    acc = 0.0
    for s in shares[:-1]:
        acc += s
        cuts.append(_cut_at(ordered, min(acc, 1.0)))
    # Float sums can leave a later cut a hair below an earlier one; cuts must not descend.
    for i in range(1, len(cuts)):
        cuts[i] = max(cuts[i], cuts[i - 1])
    return tuple(cuts)


def _strong_from(n_tiers: int, strong_from: int | None) -> int:
    if isinstance(n_tiers, bool) or not isinstance(n_tiers, int) or n_tiers < 1:
        raise ValueError(f"n_tiers must be a whole number ≥ 1, got {n_tiers!r}")
    if strong_from is None:
        return max(n_tiers // 2, 1) if n_tiers > 1 else 1
    if n_tiers > 1 and not 1 <= strong_from <= n_tiers - 1:
        raise ValueError(f"strong_from must be between 1 and {n_tiers - 1}, got {strong_from!r}")
    return strong_from


def _fraction(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a number between 0 and 1, got {value!r}")
    return float(value)


def _checked(scores: Sequence[float]) -> list[float]:
    out = []
    for i, s in enumerate(scores):
        if isinstance(s, bool) or not isinstance(s, int | float) or not math.isfinite(s):
            raise ValueError(f"scores[{i}] must be a finite number, got {s!r}")
        out.append(float(s))
    return out


def _cut_at(ordered: list[float], q: float) -> float:
    """The score above which about a `1 - q` share of `ordered` lies (ties: nearest count)."""
    if not ordered:
        return q  # uniform prior on [0, 1]: its q-quantile is q
    n = len(ordered)
    want = round(q * n)  # records that should stay below the cut
    if want >= n:
        return math.nextafter(ordered[-1], math.inf)
    if want <= 0:
        return ordered[0]
    value = ordered[want]
    below_if_at = bisect_left(ordered, value)  # cut == value: ties go up
    below_if_after = bisect_right(ordered, value)  # cut just above value: ties stay down
    if abs(below_if_after - want) < abs(below_if_at - want):
        return math.nextafter(value, math.inf)
    return value


def _share_for_cost(
    ratio: float, tier_costs: Sequence[Decimal] | None, n_tiers: int, k: int
) -> float:
    ratio = _fraction("max_cost_ratio", ratio)
    if tier_costs is None or len(tier_costs) != n_tiers:
        raise ValueError(f"max_cost_ratio needs tier_costs, one per tier ({n_tiers})")
    costs = [Decimal(c) for c in tier_costs]
    if any(not c.is_finite() or c < 0 for c in costs) or costs[-1] <= 0:
        raise ValueError("tier_costs must be ≥ 0 and the top tier's > 0")
    if n_tiers == 1:
        return 1.0
    top = float(costs[-1])
    weak = sum(float(c) * f for c, f in zip(costs[:k], side_fractions(k), strict=True))
    strong = sum(float(c) * f for c, f in zip(costs[k:], side_fractions(n_tiers - k), strict=True))
    target = ratio * top
    if strong <= weak:  # the strong side is no dearer: cost does not limit the share
        return 1.0 if target >= weak else 0.0
    return min(max((target - weak) / (strong - weak), 0.0), 1.0)
