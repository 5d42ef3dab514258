"""Train the learned router and write batchroute/data/router_model.bin (training only).

Usage: python tools/train_router.py [--data DIR] [--out FILE] [--cv]
Needs the `[train]` extra (scikit-learn). DIR defaults to ../shared/data.

- task type: `tools/train_task_head.py` (called from here too: one command writes both
  `router_model.bin` and `task_model.bin`);
- quality: one ridge regression per level (budget, mid, standard, premium) of its quality
  (RouterBench train correctness 0/1, arena-bench judge score / 10);
- cost factor: one ridge regression per level of log(the call's cost / what the prompt's length
  alone predicts at that level's fitted prices) (RouterBench train): mostly answer length;
- the plan routes to the tier maximising quality − λ·cost (batchroute/thresholds.py).

`--cv` prints 5-fold cross-validated figures on the training data for a few regularisation
strengths; the constants below were chosen that way (never on a test split).
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy.sparse import csr_matrix
from sklearn.linear_model import Ridge
from sklearn.model_selection import KFold, StratifiedKFold

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))

import train_task_head as task_head_train  # noqa: E402
from routing_data import DATA, Scored, load_arena, load_routerbench  # noqa: E402
from routing_metrics import dial_route, price_fit, prompt_tokens  # noqa: E402

from batchroute import task_head, thresholds  # noqa: E402
from batchroute.learned import MAGIC, MODEL_FILE, features, routing_features  # noqa: E402

ALPHA_QUALITY = 1000.0  # ridge strengths chosen by RouterBench-train CV (see --cv score)
ALPHA_COST = 300.0
# The dial bounds the *expected* cost, but a ridge on log factors predicts their geometric mean,
# which falls short of the mean where answer lengths vary (MBPP: gpt-4's bill 7.5 % above the
# prediction, so a 0.45 dial spent 44.1 % in CV). A second ridge of the squared (inner
# out-of-fold) residuals gives log E[factor] ≈ μ + σ²/2 (log-normal), still linear in the
# features: no change at inference. Its strength by CV (--cv score): 30/300/3000 alike.
ALPHA_VAR: float | None = 300.0
ARENA_WEIGHT = 1.0
SCORE_SCALE = 10.0  # only spreads the squashed score over (0, 1); ranks do not depend on it
MIN_DF = 2  # a feature seen in one training prompt only is noise, and would bloat the file
SEED = 12
MAX_FEATURES = 24_000
LEVELS = thresholds.LEVELS


def level_quality(s: Scored) -> list[float]:
    """Each level's quality on a 0–1 scale: RouterBench correctness as is, an arena judge
    score (1–10) divided by 10."""
    scale = 10.0 if s.group == "arena" else 1.0
    return [s.quality[t] / scale for t in LEVELS]


def log_factors(rows: Sequence[Scored]) -> np.ndarray:
    """Per row and level, log(cost / the price fit's cost): the cost factor heads' target."""
    calls, per_tok = price_fit([r.text for r in rows], [r.cost for r in rows])
    out = np.zeros((len(rows), len(LEVELS)))
    for i, r in enumerate(rows):
        n = prompt_tokens(r.text)
        for j, t in enumerate(LEVELS):
            out[i, j] = np.log(max(r.cost[t], 1e-9) / (calls[j] + per_tok[j] * n))
    return out


class LinearHeads:
    """Linear heads as the model file holds them: one row of coefficients per output."""

    def __init__(self, coef: np.ndarray, intercept: np.ndarray) -> None:
        self.coef_, self.intercept_ = coef, intercept

    def predict(self, x: csr_matrix) -> np.ndarray:
        return np.asarray(x @ self.coef_.T) + self.intercept_


class Scorer:
    """The routing heads (training-side mirror of learned.predict): per level, quality and log
    cost factor."""

    def __init__(self, quality: Ridge, cost: Ridge | LinearHeads) -> None:
        self.quality, self.cost = quality, cost

    def predict(self, x: csr_matrix) -> tuple[np.ndarray, np.ndarray]:
        """(quality, cost factor), one row per prompt, one column per level."""
        return self.quality.predict(x), np.exp(np.clip(self.cost.predict(x), -3.0, 3.0))


def fit_cost(
    xc: csr_matrix, log_factor: np.ndarray, alpha: float, alpha_var: float | None
) -> Ridge | LinearHeads:
    """The log cost factor heads: the ridge's μ, plus σ²/2 from a ridge of the squared residuals
    (out of fold within the training rows, so they are not shrunk by the fit) when `alpha_var`
    is set: log of the mean factor under a log-normal spread, one linear head per level."""
    mu = Ridge(alpha=alpha).fit(xc, log_factor)
    if alpha_var is None:
        return mu
    resid = np.zeros_like(log_factor)
    for a, b in KFold(5, shuffle=True, random_state=SEED).split(log_factor):
        resid[b] = log_factor[b] - Ridge(alpha=alpha).fit(xc[a], log_factor[a]).predict(xc[b])
    var = Ridge(alpha=alpha_var).fit(xc, resid**2)
    return LinearHeads(mu.coef_ + 0.5 * var.coef_, mu.intercept_ + 0.5 * var.intercept_)


class Vocab:
    """Hashed feature id → column, for the features seen in at least MIN_DF prompts."""

    def __init__(self, docs: Sequence[list[int]]) -> None:
        df = Counter(f for d in docs for f in d)
        self.ids = sorted(f for f, n in df.items() if n >= MIN_DF)
        self.col = {f: i for i, f in enumerate(self.ids)}

    def matrix(self, docs: Sequence[list[int]]) -> csr_matrix:
        indptr, indices = [0], []
        for d in docs:
            indices.extend(c for c in map(self.col.get, d) if c is not None)
            indptr.append(len(indices))
        data = np.ones(len(indices), dtype=np.float64)
        return csr_matrix((data, indices, indptr), shape=(len(docs), len(self.ids)))


def fit_strong(
    x: csr_matrix,
    quality: np.ndarray,
    w: Sequence[float],
    xc: csr_matrix,
    log_factor: np.ndarray,
    alpha: float = ALPHA_QUALITY,
    alpha_cost: float = ALPHA_COST,
    alpha_var: float | None = ALPHA_VAR,
) -> Scorer:
    """Fit the quality heads on (x, quality, w) and the cost factor heads on (xc, log_factor)."""
    q = Ridge(alpha=alpha).fit(x, quality, sample_weight=np.asarray(w, dtype=np.float64))
    return Scorer(q, fit_cost(xc, log_factor, alpha_cost, alpha_var))


task_data = task_head_train.task_data  # the task prompts (they count in the vocabulary)


def strong_data(
    data: Path, arena: Sequence[Scored] | None = None
) -> tuple[list[str], np.ndarray, list[float]]:
    """(texts, per-level quality, weights) of RouterBench train and arena-bench."""
    rb = load_routerbench("train", data)
    arena_rows = load_arena(data) if arena is None else arena
    ar = [Scored(s.text, "arena", s.quality, {}) for s in arena_rows]
    texts = [s.text for s in rb] + [s.text for s in ar]
    quality = np.array([level_quality(s) for s in [*rb, *ar]])
    weights = [1.0] * len(rb) + [ARENA_WEIGHT] * len(ar)
    return texts, quality, weights


def train(data: Path, arena: Sequence[Scored] | None = None) -> bytes:
    """Fit both models on the training data and return the model file's bytes."""
    t_texts, _ = task_data(data)
    s_texts, s_labels, s_weights = strong_data(data, arena)
    rb = load_routerbench("train", data)
    c_texts, c_logs = [r.text for r in rb], log_factors(rb)
    t_docs = [features(t) for t in t_texts]
    s_docs = [routing_features(t) for t in s_texts]
    c_docs = [routing_features(t) for t in c_texts]
    # The vocabulary still counts the task prompts; the task type itself is the task head's
    # (tools/train_task_head.py, its own file), so this file holds no task columns.
    vocab = Vocab(t_docs + s_docs)
    strong = fit_strong(vocab.matrix(s_docs), s_labels, s_weights, vocab.matrix(c_docs), c_logs)
    classes: list[str] = []
    # per feature: the quality heads, then the log cost factor heads
    weights = np.vstack([strong.quality.coef_, strong.cost.coef_]).T.astype("<f4")
    # Keep the features that matter most to some output (weights scaled per output, since the
    # strong model is regularised harder): the file stays well under 2 MB, scoring stays fast.
    scaled = np.abs(weights) / np.abs(weights).max(axis=0)
    top = np.sort(np.argsort(-scaled.max(axis=1), kind="stable")[:MAX_FEATURES])
    keep = np.zeros(len(weights), dtype=bool)
    keep[top] = True
    ids = np.asarray(vocab.ids, dtype="<u4")[keep]
    weights = weights[keep]
    # complexity: prompt length cut at the 35th/70th/92nd percentile of the task training prompts
    lengths = [len(t) for t in t_texts]
    cuts = [float(np.quantile(lengths, q)) for q in (0.35, 0.70, 0.92)]
    header = {
        "classes": classes,
        "n_features": len(ids),
        "intercepts": [float(b) for b in strong.quality.intercept_]
        + [float(b) for b in strong.cost.intercept_],
        "complexity_cuts": cuts,
        "score_scale": SCORE_SCALE,
        "n_levels": len(LEVELS),
        "meta": {
            "trained_on": "RouterBench train + arena-bench-v1 (per-level quality), RouterBench "
            "train (cost factors); task type: " + task_head_train.TRAINED_ON,
            "levels": list(LEVELS),
            "alpha_quality": ALPHA_QUALITY,
            "alpha_cost": ALPHA_COST,
            "alpha_var": ALPHA_VAR,
            "arena_weight": ARENA_WEIGHT,
            "n_task": len(t_texts),
            "n_strong": len(s_texts),
        },
    }
    head = json.dumps(header, sort_keys=True).encode()
    return MAGIC + struct.pack("<I", len(head)) + head + ids.tobytes() + weights.tobytes()


def cross_validate(data: Path, what: str = "all") -> None:
    """5-fold CV on the training data (how the constants were chosen): task-type macro-F1 for a
    few C values; the routing quality and real cost on RouterBench train for a few ridge
    strengths over the cost dial (`cv_score`)."""
    folds = StratifiedKFold(5, shuffle=True, random_state=SEED)
    if what in ("all", "task"):
        task_head_train.cross_validate(data)
    if what in ("all", "score"):
        cv_score(data, folds)


CV_RATIOS = (0.35, 0.4, 0.45, 0.5, 0.55)
# (quality alpha, cost alpha, variance alpha or None): the configurations --cv score compares
CV_GRID: tuple[tuple[float, float, float | None], ...] = (
    (300.0, 300.0, None),
    (1000.0, 300.0, None),
    (3000.0, 300.0, None),
    (1000.0, 3000.0, None),
    (1000.0, 300.0, 30.0),
    (1000.0, 300.0, 300.0),
    (1000.0, 300.0, 3000.0),
    (300.0, 300.0, 300.0),
    (3000.0, 300.0, 300.0),
)


def cv_score(data: Path, folds: StratifiedKFold) -> None:
    """Quality and real cost (fractions of all-premium's) of the dial at a few `max_cost_ratio`
    values, out of fold on RouterBench train, for a few ridge strengths: how ALPHA_QUALITY,
    ALPHA_COST and thresholds.DEFAULT_POLICY were chosen."""
    rb = load_routerbench("train", data)
    docs = [routing_features(r.text) for r in rb]
    groups = [r.group for r in rb]
    top_q = sum(r.quality["premium"] for r in rb) / len(rb)
    top_c = sum(r.cost["premium"] for r in rb) / len(rb)
    splits = list(folds.split(docs, groups))
    for alpha, alpha_c, alpha_v in CV_GRID:
        tiers: dict[float, list[str]] = {r: [""] * len(rb) for r in CV_RATIOS}
        for tr, te in splits:
            vocab = Vocab([docs[i] for i in tr])
            x = vocab.matrix([docs[i] for i in tr])
            train_rows = [rb[i] for i in tr]
            quality = np.array([level_quality(r) for r in train_rows])
            m = fit_strong(
                x, quality, [1.0] * len(tr), x, log_factors(train_rows), alpha, alpha_c, alpha_v
            )
            q, f = m.predict(vocab.matrix([docs[i] for i in te]))
            prices = price_fit([r.text for r in train_rows], [r.cost for r in train_rows])
            for ratio in CV_RATIOS:
                texts = [rb[i].text for i in te]
                got = dial_route(q, f, texts, prices, {"max_cost_ratio": ratio})
                for i, t in zip(te, got, strict=True):
                    tiers[ratio][i] = t
        row, qs, cs = [], [], []
        for ratio, ts in tiers.items():
            qq = sum(r.quality[t] for r, t in zip(rb, ts, strict=True)) / len(rb) / top_q
            cc = sum(r.cost[t] for r, t in zip(rb, ts, strict=True)) / len(rb) / top_c
            row.append(f"{ratio}: {qq:.3f}@{cc:.3f}")
            qs.append(qq)
            cs.append(cc)
        # quality at a real cost of 45 % of all-premium's, interpolated along the curve: compares
        # configurations whose dials spend differently
        q45 = float(np.interp(0.45, cs, qs))
        print(
            f"quality alpha={alpha:<6} cost alpha={alpha_c:<6} var alpha={alpha_v!s:<6} "
            f"q@45%real={q45:.4f} " + "  ".join(row),
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=REPO / "batchroute" / MODEL_FILE)
    parser.add_argument(
        "--cv",
        nargs="?",
        const="all",
        choices=("all", "task", "score"),
        help="print CV figures, write nothing",
    )
    args = parser.parse_args(argv)
    if args.cv:
        cross_validate(args.data, args.cv)
        return 0
    blob = train(args.data)
    args.out.write_bytes(blob)
    print(f"wrote {args.out} ({len(blob):,} bytes)")
    # the task head's own file, next to the router's (one command writes both)
    head_out = args.out.with_name(Path(task_head.MODEL_FILE).name)
    head_blob = task_head_train.train(args.data)
    head_out.write_bytes(head_blob)
    print(f"wrote {head_out} ({len(head_blob):,} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
