"""The cost dial (issue 12): per-tier quality and cost → a tier. Pure functions, no I/O.

A scoring router predicts, for each record, the expected quality of each of its quality
*levels* (`LEVELS`: budget, mid, standard, premium; RouterBench correctness of mistral-7b,
mixtral-8x7b, gpt-3.5 and gpt-4) and a cost factor per level (how much dearer than a typical
prompt's call this prompt's call is at that level: mostly answer length). A record goes to the
tier that maximises

    quality − λ · cost,        cost = (per_call + per_token × prompt tokens) × cost factor

where `per_call`/`per_token` are the job's own expected prices for each tier (the plan knows
them) and λ (quality given up per USD saved) is one number for the whole input. λ = 0 buys the
best predicted quality whatever it costs; a large λ sends everything to the cheapest tier. The
strong share and the expected cost both fall as λ grows (the tiers are priced cheapest first),
so `calibrate` finds λ on the input itself by bisection, for the user's `strong_share` (share of
records on the strong tiers, `strong_from` up; default the upper half) or `max_cost_ratio`
(expected cost / all on the top tier). This is the Lagrangian of "most quality under a cost",
so with good predictions each dollar goes where it buys the most: a prompt whose cheap tier is
as good as the dear one (MBPP: gpt-3.5 equals gpt-4 there) stops at the cheap tier.

How the model's four levels map onto a job's tiers (cheapest first), `tier_levels`: the top
tier is premium, the next standard, the next mid, any cheaper ones budget; a job of two tiers
maps mid and premium (RouteLLM's weak/strong pair), of one tier premium. Two tiers of one level
have the same predicted quality, so the cheaper one wins: a job with five tiers leaves the
cheapest-but-one unused by the dial (the experiment and escalation still reach it).
`tools/eval_routing.py` and `tools/train_router.py` import this module, so the evaluation
routes exactly like a run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

LEVELS: Final = ("budget", "mid", "standard", "premium")
"""The learned model's quality levels, cheapest first (its per-level heads, in this order)."""

DEFAULT_POLICY: dict[str, float] = {"max_cost_ratio": 0.45}
"""The default cost dial for a scoring classifier: a cost ratio, because cost is what a user
pays and a strong share does not bound it (a strong share of 0.45 costs 33 % or 47 % of all on
the top tier depending on which prompts go up). Chosen on RouterBench-train cross-validation,
never a test split (`python tools/train_router.py --cv score`): see docs/router-model-card.md."""

_LOG_LAM: Final = (-6.0, 12.0)  # log10 λ searched: 1e-6 to 1e12 quality per USD
_STEPS: Final = 48


def tier_levels(n_tiers: int) -> tuple[int, ...]:
    """The model level (index into `LEVELS`) whose predictions each of a job's `n_tiers` tiers
    (cheapest first) takes."""
    if isinstance(n_tiers, bool) or not isinstance(n_tiers, int) or n_tiers < 1:
        raise ValueError(f"n_tiers must be a whole number ≥ 1, got {n_tiers!r}")
    if n_tiers <= 2:
        return (3,) if n_tiers == 1 else (1, 3)
    return (0,) * (n_tiers - 3) + (1, 2, 3)


def for_tiers(values: Sequence[float], n_tiers: int) -> tuple[float, ...]:
    """Per-level `values` (one per `LEVELS` entry) as one value per job tier."""
    return tuple(float(values[lv]) for lv in tier_levels(n_tiers))


def strong_from(n_tiers: int, first: int | None = None) -> int:
    """The index of the first strong tier: `first`, else the upper half (standard, premium)."""
    if first is None:
        return max(n_tiers // 2, 1) if n_tiers > 1 else 0
    if not 0 <= first <= n_tiers - 1:
        raise ValueError(f"strong_from must be between 0 and {n_tiers - 1}, got {first!r}")
    return first


def choose(quality: Sequence[float], costs: Sequence[float], lam: float) -> int:
    """The tier maximising quality − λ·cost; a tie goes to the cheaper (earlier) tier. At an
    infinite λ, the cheapest tier."""
    if math.isinf(lam):
        return min(range(len(costs)), key=costs.__getitem__)
    best, best_v = 0, quality[0] - lam * costs[0]
    for i in range(1, len(quality)):
        v = quality[i] - lam * costs[i]
        if v > best_v:
            best, best_v = i, v
    return best


@dataclass(frozen=True, slots=True)
class Point:
    """One record as the dial sees it: per job tier, predicted quality and cost factor; and
    its prompt tokens."""

    quality: tuple[float, ...]
    factor: tuple[float, ...]
    tokens: int


@dataclass(frozen=True, slots=True)
class Dial:
    """A calibrated dial: λ and the job's expected prices per tier (cheapest first)."""

    lam: float
    per_call: tuple[float, ...]  # expected USD of one call at an empty prompt
    per_token: tuple[float, ...]  # plus this much per prompt token
    strong_share: float = 0.0  # reached on the points calibrated on
    cost_ratio: float = 0.0  # expected cost / all on the top tier there (cost factors included)

    def costs(self, factor: Sequence[float], tokens: int) -> list[float]:
        """A record's expected cost on each tier."""
        return [
            (c + t * tokens) * f
            for c, t, f in zip(self.per_call, self.per_token, factor, strict=True)
        ]

    def tier(self, quality: Sequence[float], factor: Sequence[float], tokens: int) -> int:
        """The tier (0 = cheapest) for a record with these predictions."""
        return choose(quality, self.costs(factor, tokens), self.lam)


def calibrate(
    points: Sequence[Point],
    per_call: Sequence[float],
    per_token: Sequence[float],
    *,
    strong_share: float | None = None,
    max_cost_ratio: float | None = None,
    strong_first: int | None = None,
) -> Dial:
    """The dial whose λ sends about `strong_share` of `points` to the strong tiers, or the
    smallest λ (most quality) whose expected cost is at most `max_cost_ratio` × all on the top
    tier. Exactly one of the two is given. Without points λ is 0 for a share of 1, else
    infinite (everything on the cheapest tier).

    Raises:
        ValueError: a bad argument (the message names it).
    """
    n = len(per_call)
    if n < 1 or len(per_token) != n:
        raise ValueError("per_call and per_token need one price per tier")
    if any(not math.isfinite(p) or p < 0 for p in (*per_call, *per_token)):
        raise ValueError("tier prices must be finite and ≥ 0")
    if (strong_share is None) == (max_cost_ratio is None):
        raise ValueError("give exactly one of strong_share and max_cost_ratio")
    k = strong_from(n, strong_first)
    probe = Dial(0.0, tuple(per_call), tuple(per_token))
    rows = []
    for i, p in enumerate(points):
        if len(p.quality) != n or len(p.factor) != n:
            raise ValueError(f"points[{i}] must have one quality and one factor per tier ({n})")
        if not all(math.isfinite(x) for x in (*p.quality, *p.factor)):
            raise ValueError(f"points[{i}] must hold finite numbers")
        rows.append((p.quality, probe.costs(p.factor, p.tokens)))

    def at(lam: float) -> tuple[float, float]:  # (strong share, cost / all on top)
        strong, cost, top = 0, 0.0, 0.0
        for q, c in rows:
            t = choose(q, c, lam)
            strong += t >= k
            cost += c[t]
            top += c[-1]
        return strong / len(rows), (cost / top if top > 0 else 0.0)

    share = strong_share is not None
    want = _fraction(
        *(("strong_share", strong_share) if share else ("max_cost_ratio", max_cost_ratio))
    )
    if not rows or n == 1:
        lam = 0.0 if want >= 1 else math.inf
    else:
        lam = _search(lambda lam: at(lam)[0 if share else 1], want, nearest=share)
    reached = at(lam) if rows else (0.0, 0.0)
    return Dial(lam, probe.per_call, probe.per_token, *reached)


def _search(f: Callable[[float], float], want: float, *, nearest: bool) -> float:
    """λ for a measure `f` that falls as λ grows: the one nearest `want` (`nearest`), else the
    smallest with `f(λ)` ≤ `want`. Bisection on log λ; 0 or ∞ at the ends."""
    if f(0.0) <= want:
        return 0.0
    lo, hi = _LOG_LAM
    if f(math.pow(10.0, hi)) > want:
        return math.inf  # only the cheapest tiers get there
    for _ in range(_STEPS):  # invariant: f(10**lo) > want ≥ f(10**hi)
        mid = (lo + hi) / 2
        if f(math.pow(10.0, mid)) > want:
            lo = mid
        else:
            hi = mid
    low, high = math.pow(10.0, lo), math.pow(10.0, hi)
    if nearest and abs(f(low) - want) < abs(f(high) - want):
        return low
    return high


def _fraction(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a number between 0 and 1, got {value!r}")
    return float(value)
