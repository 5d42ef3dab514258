"""How records split over the tiers: the score sample the cost dial calibrates on, and the
experiment arms. Pure and synchronous; stdlib only.

- `ScoreSketch` holds the scores of an input of any size in fixed memory: a histogram of
  `BINS` bins over [0, 1]. A 10M-line input costs the same 80 kB as a 10-line one. Its
  `sample()` is a bounded, sorted list of scores with the input's distribution (each bin's
  scores stand at its lower edge), which is what `thresholds.calibrate` needs. A record's
  own score is compared with the cuts exactly; the sketch only decides where the cuts lie,
  so a share is off by at most the records of one bin (1/10,000 of the score range). Each
  bin also keeps its lowest and highest real score, so `snap` turns a cut made on the
  sample into one on the real scores: a cut at a bin sends that bin's records up or keeps
  them all down, as calibration chose for its tied sample points.
- `in_experiment` is a pure function of (seed, record key): the same seed gives the same
  arms in every run and every resume, whatever order or subset of the input a run sees.
"""

from __future__ import annotations

import hashlib
import math
from bisect import bisect_right
from collections.abc import Callable, Sequence
from typing import Final

BINS: Final = 10_000
SAMPLE_MAX: Final = 10_000  # the most scores handed to calibration (quantiles beyond that)
CONTROL: Final = "control"


class ScoreSketch:
    """A fixed-size histogram of scores in [0, 1] (out-of-range scores are clamped)."""

    def __init__(self) -> None:
        self._counts = [0] * (BINS + 1)  # the last bin holds score == 1.0
        self._low: dict[int, float] = {}  # bin → its lowest real score (at most BINS + 1 each)
        self._high: dict[int, float] = {}
        self._tokens: dict[int, int] = {}  # bin → its records' prompt tokens (the cost dial)
        self.count = 0

    def add(self, score: float, tokens: int = 0) -> None:
        """Count one score (of a record whose prompt is about `tokens` tokens)."""
        if score != score:  # NaN: the bottom (never "strong")
            score = 0.0
        b = min(max(int(score * BINS), 0), BINS)
        self._counts[b] += 1
        self._low[b] = min(self._low.get(b, score), score)
        self._high[b] = max(self._high.get(b, score), score)
        self._tokens[b] = self._tokens.get(b, 0) + tokens
        self.count += 1

    def cost(
        self, cuts: Sequence[float], per_call: Sequence[float], per_token: Sequence[float]
    ) -> float:
        """The input's expected cost routed by `cuts` (snapped: a bin is wholly on one tier),
        tier `t` costing `per_call[t] + per_token[t] × prompt tokens` a record."""
        total = 0.0
        for b, low in self._low.items():
            t = bisect_right(cuts, low)
            total += self._counts[b] * per_call[t] + self._tokens[b] * per_token[t]
        return total

    def snap(self, cut: float) -> float:
        """A cut chosen on `sample()` as a cut on the real scores. The sample stands each bin's
        scores at the bin's lower edge `e`, so calibration's cut is `e` (the bin's records go
        up) or just above `e` (they stay down); on real scores the first is the bin's lowest
        score, the second just above its highest. Other cuts are returned as they are."""
        b = min(max(round(cut * BINS), 0), BINS)
        if b not in self._low:
            return cut
        edge = b / BINS
        if cut == edge:
            return self._low[b]
        if cut == math.nextafter(edge, math.inf):
            return math.nextafter(self._high[b], math.inf)
        return cut

    def sample(self, limit: int = SAMPLE_MAX) -> list[float]:
        """At most `limit` scores, ascending, spread over the input's quantiles: every score
        when there are no more than `limit`, else the score at each of `limit` even quantiles."""
        n = self.count
        m = min(n, limit)
        out: list[float] = []
        if m == 0:
            return out
        # The j-th point is the score of rank floor((j + 0.5) * n / m) (0-based) in the input.
        j, seen = 0, 0
        for b, c in enumerate(self._counts):
            seen += c
            while j < m and (2 * j + 1) * n < 2 * m * seen:
                out.append(b / BINS)
                j += 1
        return out


def share_for_cost(
    sketch: ScoreSketch,
    ratio: float,
    cuts_for: Callable[[float], Sequence[float]],
    per_call: Sequence[float],
    per_token: Sequence[float],
) -> float:
    """The largest strong share whose cuts (`cuts_for(share)`) keep the input's expected cost at
    most `ratio` × all on the top tier, each record at its own prompt length: the records a
    dial sends up need not be of the input's mean length. 0 when even 0 costs more."""
    top = sketch.cost((), per_call[-1:], per_token[-1:])
    if sketch.cost(cuts_for(1.0), per_call, per_token) <= ratio * top:
        return 1.0
    lo, hi = 0.0, 1.0  # cost(lo) ≤ target or lo = 0; cost(hi) > target
    for _ in range(30):  # 1e-9 of a share: below one record of any input the sketch holds
        mid = (lo + hi) / 2
        if sketch.cost(cuts_for(mid), per_call, per_token) <= ratio * top:
            lo = mid
        else:
            hi = mid
    return lo


def _unit(seed: int, key: str) -> float:
    """A uniform number in [0, 1) from (seed, key): blake2b, stable across Python versions."""
    digest = hashlib.blake2b(f"{seed}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def in_experiment(seed: int, key: str, share: float) -> bool:
    """Whether the record with `key` is in the experiment's arm (about `share` of records)."""
    return _unit(seed, key) < share


def arm_name(tier_shift: int) -> str:
    """The label of the experiment arm in `results.arm`, e.g. "shift+1" or "shift-1"."""
    return f"shift{tier_shift:+d}"


def shifted(index: int, tier_shift: int, n_tiers: int) -> int:
    """The tier index `tier_shift` tiers away, clamped to the cheapest and the dearest tier."""
    return min(max(index + tier_shift, 0), n_tiers - 1)
