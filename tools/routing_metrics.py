"""Pure metrics for tools/eval_routing.py: task-type scores, rank agreement, cost–quality points.

No I/O and no third-party imports, so tests run them on tiny fixtures.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import combinations

from batchroute.budget import typical_prompt_tokens
from batchroute.thresholds import Point as DialPoint
from batchroute.thresholds import calibrate, for_tiers, tier_levels

TIERS = ("budget", "mid", "standard", "premium")


# --- task types --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskScores:
    accuracy: float
    macro_f1: float
    confusion: dict[tuple[str, str], int]  # (gold, predicted) → count
    labels: tuple[str, ...]  # rows/columns of the confusion matrix, in display order


def task_scores(
    golds: Sequence[str], accepted: Sequence[Sequence[str]], preds: Sequence[str]
) -> TaskScores:
    """Accuracy and macro-F1 where a prediction in `accepted` counts as the gold label.

    Lenient scoring for sets whose categories map onto two task types (MT-Bench "stem" is
    simple_qa or analysis): a prediction the mapping accepts is scored as right; anything else
    is scored against the first (gold) label. Macro-F1 averages over the gold labels present.
    """
    truth = [p if p in acc else g for g, acc, p in zip(golds, accepted, preds, strict=True)]
    confusion = Counter(zip(truth, preds, strict=True))
    present = sorted(set(truth))
    f1s = []
    for label in present:
        tp = confusion[(label, label)]
        fp = sum(n for (t, p), n in confusion.items() if p == label and t != label)
        fn = sum(n for (t, p), n in confusion.items() if t == label and p != label)
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    n = len(truth)
    accuracy = sum(t == p for t, p in zip(truth, preds, strict=True)) / n if n else 0.0
    labels = tuple(present + sorted(set(preds) - set(present)))
    return TaskScores(accuracy, sum(f1s) / len(f1s) if f1s else 0.0, dict(confusion), labels)


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties); 0.0 when either side is constant."""

    def ranks(v: Sequence[float]) -> list[float]:
        order = sorted(range(len(v)), key=v.__getitem__)
        out = [0.0] * len(v)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                out[order[k]] = (i + j) / 2
            i = j + 1
        return out

    rx, ry = ranks(xs), ranks(ys)
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(rx) / n, sum(ry) / n
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    vx = sum((a - mx) ** 2 for a in rx)
    vy = sum((b - my) ** 2 for b in ry)
    return cov / (vx * vy) ** 0.5 if vx and vy else 0.0


# --- routing ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Point:
    """One routing policy's result: mean quality and mean cost per prompt, and tier shares."""

    name: str
    quality: float
    cost: float
    shares: dict[str, float]


def route_point(
    name: str,
    tiers: Sequence[str],
    quality: Sequence[dict[str, float]],
    cost: Sequence[dict[str, float]],
) -> Point:
    """Mean quality and cost when prompt i goes to tiers[i]."""
    n = len(tiers)
    q = sum(qs[t] for t, qs in zip(tiers, quality, strict=True)) / n
    c = sum(cs[t] for t, cs in zip(tiers, cost, strict=True)) / n
    counts = Counter(tiers)
    return Point(name, q, c, {t: counts[t] / n for t in TIERS if counts[t]})


def single(
    tier: str, quality: Sequence[dict[str, float]], cost: Sequence[dict[str, float]]
) -> Point:
    return route_point(f"all {tier}", [tier] * len(quality), quality, cost)


def random_like(
    p: Point, quality: Sequence[dict[str, float]], cost: Sequence[dict[str, float]]
) -> Point:
    """Random routing with the same tier shares as `p` (its expected quality and cost)."""
    n = len(quality)
    mean_q = {t: sum(q[t] for q in quality) / n for t in p.shares}
    mean_c = {t: sum(c[t] for c in cost) / n for t in p.shares}
    return Point(
        f"random, shares of {p.name}",
        sum(s * mean_q[t] for t, s in p.shares.items()),
        sum(s * mean_c[t] for t, s in p.shares.items()),
        dict(p.shares),
    )


def random_at_cost(
    p: Point, quality: Sequence[dict[str, float]], cost: Sequence[dict[str, float]]
) -> Point:
    """Random routing that spends what `p` spends (the issue's "random routing at equal cost"):
    a random share of prompts to a dearer tier and the rest to a cheaper one, of the pairs whose
    mean costs bracket `p.cost` the one with the best quality (the strongest such baseline);
    clamped to the cheapest or the dearest tier outside their range."""
    n = len(quality)
    mean_q = {t: sum(q[t] for q in quality) / n for t in TIERS}
    mean_c = {t: sum(c[t] for c in cost) / n for t in TIERS}
    name = f"random, equal cost to {p.name}"
    cheapest, dearest = min(TIERS, key=mean_c.__getitem__), max(TIERS, key=mean_c.__getitem__)
    if p.cost <= mean_c[cheapest] or p.cost >= mean_c[dearest]:
        t = cheapest if p.cost <= mean_c[cheapest] else dearest
        return Point(name, mean_q[t], mean_c[t], {t: 1.0})
    best: Point | None = None
    for lo, hi in combinations(TIERS, 2):
        lo, hi = sorted((lo, hi), key=mean_c.__getitem__)
        if not mean_c[lo] <= p.cost <= mean_c[hi] or mean_c[lo] == mean_c[hi]:
            continue
        s = (p.cost - mean_c[lo]) / (mean_c[hi] - mean_c[lo])
        q = mean_q[lo] + s * (mean_q[hi] - mean_q[lo])
        if best is None or q > best.quality:
            best = Point(name, q, p.cost, {lo: 1 - s, hi: s})
    assert best is not None  # p.cost lies strictly between the cheapest and the dearest
    return best


def oracle(quality: Sequence[dict[str, float]], cost: Sequence[dict[str, float]]) -> Point:
    """Per prompt, the cheapest tier that reaches the best quality any tier reaches."""
    chosen = []
    for qs, cs in zip(quality, cost, strict=True):
        best = max(qs[t] for t in TIERS if t in qs)
        chosen.append(min((t for t in TIERS if t in qs and qs[t] == best), key=cs.__getitem__))
    return route_point("oracle", chosen, quality, cost)


def pgr(q: float, weak: float, strong: float) -> float:
    """Performance gap recovered (RouteLLM): 0 at the weak model, 1 at the strong one."""
    return (q - weak) / (strong - weak) if strong != weak else 0.0


def apgr(
    quality_at_share: Callable[[float], float], weak: float, strong: float, steps: int = 10
) -> float:
    """Average PGR over strong-call shares 0, 1/steps, …, 1 (RouteLLM's APGR, trapezoid rule)."""
    xs = [i / steps for i in range(steps + 1)]
    ys = [pgr(quality_at_share(x), weak, strong) for x in xs]
    return sum((ys[i] + ys[i + 1]) / 2 for i in range(steps)) / steps


# --- the cost dial on evaluation data ----------------------------------------------------------


def prompt_tokens(text: str) -> int:
    """The plan's typical token count of a one-message prompt (budget.typical_prompt_tokens)."""
    return typical_prompt_tokens([{"role": "user", "content": text}])


Prices = tuple[tuple[float, ...], tuple[float, ...]]


def price_fit(texts: Sequence[str], cost: Sequence[dict[str, float]]) -> Prices:
    """Per tier (`TIERS`), the least-squares (per call, per prompt token) USD of the observed
    costs: on RouterBench the stand-in for the prices a job knows (a run uses its own)."""
    xs = [float(prompt_tokens(t)) for t in texts]
    n = len(xs)
    mx = sum(xs) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    calls, per_tok = [], []
    for t in TIERS:
        ys = [c[t] for c in cost]
        my = sum(ys) / n
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else 0.0
        slope = max(slope, 0.0)
        calls.append(max(my - slope * mx, 1e-9))
        per_tok.append(slope)
    return tuple(calls), tuple(per_tok)


def dial_route(
    quality: Sequence[Sequence[float]],
    factor: Sequence[Sequence[float]],
    texts: Sequence[str],
    prices: Prices,
    policy: dict[str, float],
    tiers: Sequence[str] = TIERS,
) -> list[str]:
    """The tier each prompt goes to under the cost dial `policy`, calibrated on these prompts
    exactly as a run calibrates on its input (`thresholds.calibrate`). `quality` and `factor`
    are per model level (`thresholds.LEVELS`); `tiers` names the job's tiers, cheapest first
    (the levels map onto them by `thresholds.tier_levels`); `prices` are per level."""
    n = len(tiers)
    lv = tier_levels(n)
    per_call = tuple(prices[0][i] for i in lv)
    per_token = tuple(prices[1][i] for i in lv)
    points = [
        DialPoint(for_tiers(q, n), for_tiers(f, n), prompt_tokens(t))
        for q, f, t in zip(quality, factor, texts, strict=True)
    ]
    dial = calibrate(points, per_call, per_token, **policy)  # type: ignore[arg-type]
    return [tiers[dial.tier(p.quality, p.factor, p.tokens)] for p in points]
